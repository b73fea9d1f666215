// HiFT's ResBlock on the CPU: for each dilation d, x += conv2(snake2(conv1_d(snake1(x)))), the
// convs direct (no per-tap passes), channels-last, time split over threads.
//
// Why: MLX's CPU conv is one GEMM per tap, so the (T, C) output is written and re-read k times,
// and the Snake between the convs runs on one core; torch's oneDNN keeps the k taps' sums in
// registers. Here a tile of 4 time steps x 32 output channels accumulates over all taps and input
// channels in registers, and the Snake or the residual is applied as the tile is stored. Built at
// run time by ports.common.native; the compiled MLX ResBlock stays the fallback.
//
// Snake is hift.snake as the MLX path computes it (mlx_fastmath.sin_squared), op for op, with no
// contraction: x + inv_alpha * sin^2(alpha x), inv_alpha passed in.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "native_vec.h"

namespace {

using namespace ports_native;  // NOLINT: vf8, load8, store8, splat8, kTileRows

constexpr float kInvPi = 0.3183098861837907f;  // float32(1 / pi), as MLX rounds the Python float
constexpr float kRound = 12582912.0f;          // 1.5 * 2^23
constexpr float kPiA = 3.140625f, kPiB = 9.67502593994140625e-4f,
                kPiC = 1.509957990978376432e-7f;
constexpr float kS0 = 2.6109635400229118e-06f, kS1 = -1.981200254770657e-04f,
                kS2 = 8.333100398635046e-03f, kS3 = -1.6666660989785437e-01f;

inline float snake(float x, float alpha, float inv_alpha) {
  float xa = x * alpha;
  float n = (xa * kInvPi + kRound) - kRound;
  float r = ((xa - n * kPiA) - n * kPiB) - n * kPiC;
  float r2 = r * r;
  float p = ((kS0 * r2 + kS1) * r2 + kS2) * r2 + kS3;
  float s = r + (r * r2) * p;
  return x + inv_alpha * (s * s);
}

constexpr int kCols = kPanel;  // output channels per panel
constexpr int kRows = kTileRows;  // time steps per tile

// y = conv(in) + bias for t in [t_lo, t_hi); in is (T + (k - 1) d, c), zero padded; then
// mode 0: out[(t + pad_out) * c + co] = snake(y, alpha, inv) (the next conv's padded input);
// mode 1: out[t * c + co] += y (the residual).
void conv_range(const float* in, const float* wp, const float* bias, int c, int k, int d,
                long t_lo, long t_hi, int mode, const float* alpha, const float* inv, long pad_out,
                float* out) {
  float acc[kRows * kCols];
  for (int col = 0; col < c; col += kCols) {
    const float* panel = wp + (size_t)col * k * c;
    for (long t0 = t_lo; t0 < t_hi; t0 += kRows) {
      const long nr = std::min<long>(kRows, t_hi - t0);
      // tap j of output t reads input row t + j d (the input is padded)
      tile_rows((int)nr, [&](int r, int j) { return in + (size_t)(t0 + r + (long)j * d) * c; },
                k, c, panel, acc);
      for (long r = 0; r < nr; ++r) {
        const float* ar = acc + r * kCols;
        if (mode == 0) {
          float* o = out + (size_t)(t0 + r + pad_out) * c + col;
          for (int v = 0; v < kCols; ++v)
            o[v] = snake(ar[v] + bias[col + v], alpha[col + v], inv[col + v]);
        } else {
          float* o = out + (size_t)(t0 + r) * c + col;
          for (int v = 0; v < kCols; ++v) o[v] = o[v] + (ar[v] + bias[col + v]);
        }
      }
    }
  }
}

template <class F>
void split(long n, int threads, F fn) {  // fn(lo, hi) over `threads` contiguous ranges
  if (threads <= 1 || n < 64) {
    fn(0L, n);
    return;
  }
  run_threads(threads, [&](int i) { fn(n * i / threads, n * (i + 1) / threads); });
}

}  // namespace

extern "C" {

int resblock_abi(void) { return 1; }

// x (B, T, C) channels-last, updated in place. For each of nd dilations dil[i]:
// x += conv2_i(snake(conv1_i(snake(x, a1_i, i1_i)), a2_i, i2_i)), conv1 with dilation dil[i],
// conv2 with dilation 1, both k taps, 'same' zero padding, bias. w1, w2: (nd, C / 32, k, C, 32)
// packed from MLX's (C_out, k, C_in); b1, b2, a1, i1, a2, i2: (nd, C). Returns 0; 1 for bad
// sizes (C not a multiple of 32, even k).
int resblock(float* x, int batch, long t_len, int c, int k, int nd, const int* dil,
             const float* w1, const float* b1, const float* w2, const float* b2, const float* a1,
             const float* i1, const float* a2, const float* i2, int threads) {
  if (c % kCols || k % 2 == 0 || t_len <= 0 || batch <= 0 || nd <= 0) return 1;
  int dmax = 1;
  for (int i = 0; i < nd; ++i) dmax = std::max(dmax, dil[i]);
  const long pmax = (long)(k - 1) * dmax / 2, p2 = (k - 1) / 2;
  std::vector<float> s1((size_t)(t_len + 2 * pmax) * c), s2((size_t)(t_len + 2 * p2) * c, 0.0f);
  const size_t wsize = (size_t)c * k * c, vsize = c;
  for (int b = 0; b < batch; ++b) {
    float* xb = x + (size_t)b * t_len * c;
    for (int i = 0; i < nd; ++i) {
      const long p1 = (long)(k - 1) * dil[i] / 2;
      const float *al = a1 + i * vsize, *il = i1 + i * vsize;
      // snake(x) into s1 with p1 zero rows each side
      std::fill(s1.begin(), s1.begin() + p1 * c, 0.0f);
      std::fill(s1.begin() + (p1 + t_len) * c, s1.begin() + (2 * p1 + t_len) * c, 0.0f);
      split(t_len, threads, [&](long lo, long hi) {
        for (long t = lo; t < hi; ++t) {
          const float* xr = xb + (size_t)t * c;
          float* o = s1.data() + (size_t)(t + p1) * c;
          for (int ch = 0; ch < c; ++ch) o[ch] = snake(xr[ch], al[ch], il[ch]);
        }
      });
      split(t_len, threads, [&](long lo, long hi) {
        conv_range(s1.data(), w1 + i * wsize, b1 + i * vsize, c, k, dil[i], lo, hi, 0,
                   a2 + i * vsize, i2 + i * vsize, p2, s2.data());
      });
      split(t_len, threads, [&](long lo, long hi) {
        conv_range(s2.data(), w2 + i * wsize, b2 + i * vsize, c, k, 1, lo, hi, 1, nullptr,
                   nullptr, 0, xb);
      });
    }
  }
  return 0;
}

}  // extern "C"
