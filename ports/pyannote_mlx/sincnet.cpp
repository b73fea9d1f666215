// SincNet's first layer on the CPU: the 80-filter sinc conv (251 taps, stride 10), optionally
// with the |.| and MaxPool1d(3) that follow it, channels-last.
//
// Why: MLX unfolds 251 taps per output frame (16 MB per 10-s chunk) and then runs one GEMM,
// and the abs/pool pass over its output is scalar. The sinc filters are exactly symmetric (cos)
// or antisymmetric (sin), as asteroid builds them, so each frame's window is folded first
// (x[k] + x[250-k] and x[k] - x[250-k]), which halves the products; the folded windows of a
// block of frames stay in cache and feed a register-blocked kernel, and |.| and the pool are
// taken on the accumulators. Built at run time by ports.common.native; the caller checks the
// symmetry and keeps mx.conv1d otherwise.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "native_vec.h"

namespace {

using namespace ports_native;  // NOLINT: vf8, load8, store8, splat8, kTileRows

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")  // the dot products may use FMAs, as BLAS does

constexpr int kFrames = 24;  // frames per block: a multiple of 3 (pooling) and of the tile

inline vf8 abs8(vf8 v) {
  typedef int vi8 __attribute__((vector_size(32)));
  vi8 m = (vi8)v & 0x7fffffff;
  return (vf8)m;
}

inline vf8 max8(vf8 a, vf8 b) { return a > b ? a : b; }

// Three frames (rows f0..f0+2 of win, each kp floats) against w (kp x nv*8, filter-minor):
// pooled: one row max(|y0|, |y1|, |y2|) to out[0]; else three rows out[0], out[ld], out[2 ld].
template <int NV, bool kPool>
inline void tile3(const float* __restrict win, int kp, const float* __restrict w, int wld,
                  float* __restrict out, long ld) {
  vf8 a[3][NV];
  for (int r = 0; r < 3; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = vf8{};
  for (int k = 0; k < kp; ++k) {
    vf8 x0 = splat8(win[k]), x1 = splat8(win[kp + k]), x2 = splat8(win[2 * kp + k]);
    for (int v = 0; v < NV; ++v) {
      vf8 wv = load8(w + (size_t)k * wld + kV * v);
      a[0][v] = x0 * wv + a[0][v];
      a[1][v] = x1 * wv + a[1][v];
      a[2][v] = x2 * wv + a[2][v];
    }
  }
  for (int v = 0; v < NV; ++v) {
    if (kPool) {
      store8(out + kV * v, max8(max8(abs8(a[0][v]), abs8(a[1][v])), abs8(a[2][v])));
    } else {
      store8(out + kV * v, a[0][v]);
      store8(out + ld + kV * v, a[1][v]);
      store8(out + 2 * ld + kV * v, a[2][v]);
    }
  }
}

#pragma GCC pop_options

template <bool kPool>
void filters_block(const float* win, int kp, const float* w, int nf8, float* out, long ld) {
  // nf8: filters padded to a multiple of 8; groups of up to 4 vectors keep 12 accumulators
  for (int v0 = 0; v0 < nf8; v0 += 4 * kV) {
    int nv = std::min(4, (nf8 - v0) / kV);
    switch (nv) {
      case 4: tile3<4, kPool>(win, kp, w + v0, nf8, out + v0, ld); break;
      case 3: tile3<3, kPool>(win, kp, w + v0, nf8, out + v0, ld); break;
      case 2: tile3<2, kPool>(win, kp, w + v0, nf8, out + v0, ld); break;
      default: tile3<1, kPool>(win, kp, w + v0, nf8, out + v0, ld); break;
    }
  }
}

struct Job {
  const float* x;
  long n;
  const float* ws;  // (kp, ns8): taps 0..half (half = center) of the symmetric filters
  const float* wa;  // (kp, na8): taps 0..half-1 of the antisymmetric filters, zero rows after
  int ns, na, ns8, na8, half, stride, kp;
  long frames, rows;  // conv frames; output rows (frames / 3 when pooled)
  int pool;
  float* out;  // (B, rows, ns + na)
};

// Output rows [r0, r1) of chunk b.
void run_block(const Job& j, int b, long r0, long r1, std::vector<float>& win,
               std::vector<float>& tmp) {
  const float* x = j.x + (size_t)b * j.n;
  const int nf = j.ns + j.na, k_len = 2 * j.half + 1;
  const int per = j.pool ? 3 : 1;  // frames per output row
  const long f0 = r0 * per, f1 = std::min(r1 * per, j.frames);
  const long nfr = f1 - f0, nfr3 = (nfr + 2) / 3 * 3;  // the tile takes frames three at a time
  const long nrows = j.pool ? nfr / 3 : nfr3;
  const int wmax = std::max(j.ns8, j.na8);
  for (int kind = 0; kind < 2; ++kind) {
    const int nfk = kind == 0 ? j.ns : j.na;
    if (nfk == 0) continue;
    const int nf8 = kind == 0 ? j.ns8 : j.na8;
    // folded windows, kp floats per frame (zero padded); frames past f1 are zeros
    for (long t = 0; t < nfr3; ++t) {
      float* wr = win.data() + (size_t)t * j.kp;
      std::fill(wr, wr + j.kp, 0.0f);
      if (t >= nfr) continue;
      const float* xs = x + (f0 + t) * j.stride;
      if (kind == 0) {
        for (int k = 0; k < j.half; ++k) wr[k] = xs[k] + xs[k_len - 1 - k];
        wr[j.half] = xs[j.half];
      } else {
        for (int k = 0; k < j.half; ++k) wr[k] = xs[k] - xs[k_len - 1 - k];
      }
    }
    const float* w = kind == 0 ? j.ws : j.wa;
    for (long t = 0; t < nfr3; t += 3) {
      float* o = tmp.data() + (size_t)(j.pool ? t / 3 : t) * wmax;
      if (j.pool)
        filters_block<true>(win.data() + (size_t)t * j.kp, j.kp, w, nf8, o, wmax);
      else
        filters_block<false>(win.data() + (size_t)t * j.kp, j.kp, w, nf8, o, wmax);
    }
    const int c0 = kind == 0 ? 0 : j.ns;
    const long keep = j.pool ? nrows : nfr;
    for (long r = 0; r < keep; ++r)
      std::memcpy(j.out + ((size_t)b * j.rows + r0 + r) * nf + c0, tmp.data() + (size_t)r * wmax,
                  sizeof(float) * nfk);
  }
}

// InstanceNorm1d(C, affine) over T of one chunk (t_in, c) channels-last, after MaxPool1d(pool)
// (floor) when pool > 1, then leaky_relu as the MLX path writes it. The sums over T run in
// double (the MLX path sums float32 as a tree for the same reason: a long float32 sum drifts).
void norm_chunk(const float* __restrict x, long t_in, int c, int pool, const float* w,
                const float* bias, float eps, int leaky, float* __restrict out) {
  const long t = pool > 1 ? t_in / pool : t_in;
  if (pool > 1) {
    for (long r = 0; r < t; ++r) {
      const float* x0 = x + (size_t)r * pool * c;
      float* o = out + (size_t)r * c;
      for (int ch = 0; ch < c; ++ch) o[ch] = x0[ch];
      for (int p = 1; p < pool; ++p)
        for (int ch = 0; ch < c; ++ch) o[ch] = std::max(o[ch], x0[(size_t)p * c + ch]);
    }
  }
  const float* src = pool > 1 ? out : x;
  std::vector<double> s(c, 0.0), v(c, 0.0);
  std::vector<float> mean(c), scale(c);
  for (long r = 0; r < t; ++r)
    for (int ch = 0; ch < c; ++ch) s[ch] += src[(size_t)r * c + ch];
  for (int ch = 0; ch < c; ++ch) mean[ch] = (float)(s[ch] / (double)t);
  for (long r = 0; r < t; ++r)
    for (int ch = 0; ch < c; ++ch) {
      float d = src[(size_t)r * c + ch] - mean[ch];
      v[ch] += (double)d * (double)d;
    }
  for (int ch = 0; ch < c; ++ch)
    scale[ch] = w[ch] * (1.0f / std::sqrt((float)(v[ch] / (double)t) + eps));
  for (long r = 0; r < t; ++r)
    for (int ch = 0; ch < c; ++ch) {
      // (x - mean) * scale + bias, not x * scale + (bias - mean * scale): see model.py
      float z = (src[(size_t)r * c + ch] - mean[ch]) * scale[ch] + bias[ch];
      out[(size_t)r * c + ch] = leaky ? z + 0.495f * (std::fabs(z) - z) : z;
    }
}

}  // namespace

extern "C" {

int sincnet_abi(void) { return 2; }

// x (B, t_in, c) -> out (B, t_in / pool, c): MaxPool1d(pool) (pool 1: none), InstanceNorm1d
// with weight/bias (c) and eps, then leaky_relu(0.01) if leaky; chunks over `threads` threads.
// out must not overlap x. Returns 0; 1 for bad sizes.
int instance_norm(const float* x, int batch, long t_in, int c, int pool, const float* w,
                  const float* bias, float eps, int leaky, float* out, int threads) {
  if (batch <= 0 || c <= 0 || pool <= 0 || t_in / pool <= 0 || threads <= 0) return 1;
  const long t = t_in / pool;
  auto worker = [&](int tid) {
    for (int b = tid; b < batch; b += threads)
      norm_chunk(x + (size_t)b * t_in * c, t_in, c, pool, w, bias, eps, leaky,
                 out + (size_t)b * t * c);
  };
  run_threads(std::min(threads, batch), worker);
  return 0;
}

// x (B, n) float32; ws (kp, ns8) and wa (kp, na8) the folded filters, k-major, filters padded to
// multiples of 8 and taps to kp (>= half + 1, a multiple of 8) with zeros; out (B, rows, ns + na)
// with frames = (n - 2 half - 1) / stride + 1 and rows = frames / 3 if pool (|.| and
// MaxPool1d(3), floor) else frames. Chunks and frame blocks are shared by `threads` threads.
// Returns 0; 1 for bad sizes.
int sinc_conv(const float* x, long n, int batch, const float* ws, int ns, const float* wa,
              int na, int half, int stride, int kp, int pool, float* out, int threads) {
  const int k_len = 2 * half + 1;
  if (n < k_len || batch <= 0 || stride <= 0 || kp < half + 1 || kp % kV || threads <= 0)
    return 1;
  Job j{x, n, ws, wa, ns, na, (ns + kV - 1) / kV * kV, (na + kV - 1) / kV * kV, half, stride,
        kp, (n - k_len) / stride + 1, 0, pool, out};
  j.rows = pool ? j.frames / 3 : j.frames;
  const long per_block = pool ? kFrames / 3 : kFrames;
  const long blocks = (j.rows + per_block - 1) / per_block;
  const long units = blocks * batch;
  auto worker = [&](int tid) {
    std::vector<float> win((size_t)(kFrames + 2) * kp);
    std::vector<float> tmp((size_t)(kFrames + 2) * std::max(j.ns8, j.na8));
    for (long u = tid; u < units; u += threads) {
      int b = (int)(u / blocks);
      long r0 = (u % blocks) * per_block;
      run_block(j, b, r0, std::min(r0 + per_block, j.rows), win, tmp);
    }
  };
  run_threads(threads, worker);
  return 0;
}

}  // extern "C"
