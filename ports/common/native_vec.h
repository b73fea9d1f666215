// 8-float vectors for the run-time C++ kernels (ports/common/native.py adds this folder to the
// include path): GCC vector extensions, so g++ -march=native emits AVX-512VL/AVX2 ymm code, SSE
// pairs elsewhere, from one source.
#pragma once
#include <cstring>

namespace ports_native {

typedef float vf8 __attribute__((vector_size(32)));
constexpr int kV = 8;

// Register tiles of kTileRows x 4 vectors: 24 accumulators where AVX-512VL gives 32 ymm
// registers (2x faster than 4 rows on the LSTM and ResBlock), 12 of 16 elsewhere.
#ifdef __AVX512VL__
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 3;
#endif

inline vf8 load8(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, vf8 v) { std::memcpy(p, &v, sizeof v); }

// a broadcast (vf8{} + c would be an add: 0 + c is not c for c = -0)
inline vf8 splat8(float c) { return vf8{c, c, c, c, c, c, c, c}; }

}  // namespace ports_native
