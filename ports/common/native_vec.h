// Shared pieces of the run-time C++ kernels (ports/common/native.py adds this folder to the
// include path): 8-float vectors (GCC vector extensions, so g++ -march=native emits AVX-512VL/AVX2
// ymm code, SSE pairs elsewhere, from one source), the register-tiled GEMM step over packed
// weight panels, and a thread fan-out.
#pragma once
#include <cstring>
#include <thread>
#include <vector>

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

constexpr int kPanel = 4 * kV;  // output columns per weight panel

// fn(tid) for tid in [0, threads), tid 0 on the calling thread.
template <class F>
void run_threads(int threads, F fn) {
  std::vector<std::thread> extra;
  for (int i = 1; i < threads; ++i) extra.emplace_back(fn, i);
  fn(0);
  for (auto& th : extra) th.join();
}

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")  // the dot products may use FMAs, as BLAS does

// R rows x 32 columns: acc[r][*] = sum over segments s < nseg and i < seg of
// row(r, s)[i] * panel[(s * seg + i) * 32 + *]. A GEMM row is one segment (row(r, 0) = a + r lda);
// a conv's is one segment per tap (row(r, j) = the input row of output r shifted by tap j).
template <int R, class Row>
inline void panel_tile(Row row, int nseg, int seg, const float* __restrict panel,
                       float* __restrict acc) {
  vf8 a[R][4];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 4; ++v) a[r][v] = vf8{};
  for (int sg = 0; sg < nseg; ++sg) {
    const float* rp[R];
    for (int r = 0; r < R; ++r) rp[r] = row(r, sg);
    const float* ws = panel + (size_t)sg * seg * kPanel;
    for (int i = 0; i < seg; ++i) {
      vf8 w[4];
      for (int v = 0; v < 4; ++v) w[v] = load8(ws + (size_t)i * kPanel + kV * v);
      for (int r = 0; r < R; ++r) {
        vf8 xv = splat8(rp[r][i]);
        for (int v = 0; v < 4; ++v) a[r][v] = xv * w[v] + a[r][v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 4; ++v) store8(acc + (size_t)r * kPanel + kV * v, a[r][v]);
}

#pragma GCC pop_options

// panel_tile for nr <= 6 rows (kTileRows at most).
template <class Row>
inline void tile_rows(int nr, Row row, int nseg, int seg, const float* panel, float* acc) {
  switch (nr) {
    case 6: panel_tile<6>(row, nseg, seg, panel, acc); break;
    case 5: panel_tile<5>(row, nseg, seg, panel, acc); break;
    case 4: panel_tile<4>(row, nseg, seg, panel, acc); break;
    case 3: panel_tile<3>(row, nseg, seg, panel, acc); break;
    case 2: panel_tile<2>(row, nseg, seg, panel, acc); break;
    default: panel_tile<1>(row, nseg, seg, panel, acc); break;
  }
}

}  // namespace ports_native
