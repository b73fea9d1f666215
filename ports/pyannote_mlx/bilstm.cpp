// One bidirectional LSTM layer of segmentation-3.0 on the CPU: the whole time loop in C++.
//
// Why: MLX's CPU backend pays ~30 us per kernel call and runs elementwise work scalar and on one
// thread, so a 589-step loop of small ops costs far more than its arithmetic. Here each step is
// one register-blocked h @ W_hh^T and one vectorised gate pass; the two directions run on two
// threads. Built at run time by ports.common.native (g++ -O3 -march=native -ffp-contract=off),
// like MLX's own mx.compile kernels; the pure-MLX step stays the fallback.
//
// Numerics mirror the pure-MLX "jit" step (model.py _step_math with mlx_layers.sigmoid_jit /
// tanh_jit): the same float32 formulas op for op, no contraction outside the explicit fmaf of
// the dot products (BLAS uses FMA too), the input projection added after the dot product as
// sgemm(beta = 1) does. Only the dot products' summation order differs from OpenBLAS's.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Cephes expf polynomial and the constants of mlx_layers._exp_neg_parts, as float32.
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
constexpr float kClamp = 87.33654f;  // -EXP_LO
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;

// exp(-a), a = min(scale |x|, 87.34), as pw * (1 + q): pw = 2^-n exact, q = expm1(-r).
inline void exp_neg_parts(float x, float scale, float& pw, float& q) {
  float a = std::fabs(x) * scale;  // scale 1 or 2: exact
  a = a < kClamp ? a : kClamp;
  float k = kRound + kLog2e * a;  // round(a log2 e) in the low bits, n <= 126
  int32_t ki = static_cast<int32_t>(k);
  int32_t n = ki & 127;
  int32_t bits = (127 - n) << 23;
  std::memcpy(&pw, &bits, 4);
  float nf = (a * kLog2e + kRound) - kRound;
  float u = (nf * kLn2Hi - a) + nf * kLn2Lo;
  float u2 = u * u;
  float poly = ((kP4 * u + kP5) + u2 * (kP2 * u + kP3)) + (u2 * u2) * (kP0 * u + kP1);
  q = u + u2 * poly;
}

inline float sigmoid(float x) {
  float pw, q;
  exp_neg_parts(x, 1.0f, pw, q);
  float e = pw * q + pw;
  float y = e / (1.0f + e);
  float pos = 1.0f - y;
  return x < 0.0f ? y : pos;
}

inline float tanh_(float x) {
  float pw, q;
  exp_neg_parts(x, 2.0f, pw, q);
  bool neg = x < 0.0f;
  float m = pw * q + (pw - 1.0f);
  float small = (neg ? m : -m) / (2.0f + m);
  float e = pw * q + pw;
  float y = e / (1.0f + e);
  float big = neg ? (-1.0f - (-2.0f) * y) : (1.0f - 2.0f * y);
  return std::fabs(x) < 0.55f ? small : big;
}

// The recurrent products, acc = W (R x H, row-major) @ h. Explicit 8-float vectors (GCC vector
// extensions: AVX2/AVX-512 ymm, SSE pairs elsewhere) with accumulators held in registers; the
// only code here where products and sums may fuse into FMAs (BLAS's GEMMs do too).
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

typedef float vf8 __attribute__((vector_size(32)));
constexpr int kV = 8;

inline vf8 load8(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, vf8 v) { std::memcpy(p, &v, sizeof v); }

// a broadcast (vf8{} + c would be an add: 0 + c is not c for c = -0)
inline vf8 splat8(float c) { return vf8{c, c, c, c, c, c, c, c}; }

// Rows r0..r0+3, columns [col, col + 8 NV) of acc (R x bp) from h (H x bp), bp % 8 == 0.
template <int NV>
inline void tile_rows(const float* __restrict w, const float* __restrict h, float* __restrict acc,
                      int r0, int col, int hid, int bp) {
  vf8 a[4][NV];
  for (int r = 0; r < 4; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = vf8{};
  const float* w0 = w + (size_t)r0 * hid;
  for (int k = 0; k < hid; ++k) {
    vf8 hv[NV];
    for (int v = 0; v < NV; ++v) hv[v] = load8(h + (size_t)k * bp + col + kV * v);
    for (int r = 0; r < 4; ++r) {
      float c = w0[(size_t)r * hid + k];
      vf8 wr = splat8(c);
      for (int v = 0; v < NV; ++v) a[r][v] = wr * hv[v] + a[r][v];
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int v = 0; v < NV; ++v) store8(acc + (size_t)(r0 + r) * bp + col + kV * v, a[r][v]);
}

// Batch as the vector dimension: h (H x bp), bp a multiple of 8; rows a multiple of 4.
void gemm_rows(const float* w, const float* h, float* acc, int rows, int hid, int bp) {
  for (int r0 = 0; r0 < rows; r0 += 4) {
    int col = 0;
    for (; col + 4 * kV <= bp; col += 4 * kV) tile_rows<4>(w, h, acc, r0, col, hid, bp);
    switch ((bp - col) / kV) {
      case 3: tile_rows<3>(w, h, acc, r0, col, hid, bp); break;
      case 2: tile_rows<2>(w, h, acc, r0, col, hid, bp); break;
      case 1: tile_rows<1>(w, h, acc, r0, col, hid, bp); break;
      default: break;
    }
  }
}

inline float hsum8(vf8 v) {  // fixed order: (0+4, 1+5, 2+6, 3+7), then pairs
  float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
  return (s0 + s2) + (s1 + s3);
}

// Small batches: dot products of W rows with h's columns, held transposed (b x H), H % 8 == 0;
// acc (R x bp).
void gemm_dots(const float* __restrict w, const float* __restrict ht, float* __restrict acc,
               int rows, int hid, int b, int bp) {
  for (int j = 0; j < b; ++j) {
    const float* hj = ht + (size_t)j * hid;
    for (int r0 = 0; r0 < rows; r0 += 4) {
      vf8 a[4][2] = {};
      const float* w0 = w + (size_t)r0 * hid;
      for (int k = 0; k < hid; k += 2 * kV) {
        vf8 h0 = load8(hj + k), h1 = load8(hj + k + kV);
        for (int r = 0; r < 4; ++r) {
          a[r][0] = load8(w0 + (size_t)r * hid + k) * h0 + a[r][0];
          a[r][1] = load8(w0 + (size_t)r * hid + k + kV) * h1 + a[r][1];
        }
      }
      for (int r = 0; r < 4; ++r) acc[(size_t)(r0 + r) * bp + j] = hsum8(a[r][0] + a[r][1]);
    }
  }
}

#pragma GCC pop_options

constexpr int kDotsBelow = 4;  // batch below which gemm_dots is used

// One direction. xp: (2, 4H, T, B) input projections W_ih x of both directions, in forward
// time, without the bias; bias: (4H) this direction's; w: (4H, H) weight_hh of this direction
// (g rows pre-scaled by 2 in all three); out: (2H, T, B), this direction's h at rows
// [d*H, d*H + H) in forward time. Inside, the batch is padded to bp (a multiple of 8) with zero
// columns, which stay zero (sigmoid(0) gates keep c = h = 0).
void run_direction(const float* xp, const float* bias, const float* w, float* out, int hid,
                   int t_len, int b, int d) {
  const int rows = 4 * hid;
  const int bp = (b + kV - 1) / kV * kV;
  const size_t hb = (size_t)hid * bp;
  std::vector<float> acc((size_t)rows * bp), hcur(hb, 0.0f), ht((size_t)b * hid, 0.0f),
      c(hb, 0.0f);
  const bool dots = b < kDotsBelow;
  for (int s = 0; s < t_len; ++s) {
    const int t = d == 0 ? s : t_len - 1 - s;  // the backward direction walks time backwards
    if (dots)
      gemm_dots(w, ht.data(), acc.data(), rows, hid, b, bp);
    else
      gemm_rows(w, hcur.data(), acc.data(), rows, hid, bp);
    // + (W_ih x_t + bias), rounded as the MLX step's addmm(bias, W_ih, x) then addmm(that,
    // W_hh, h); row r of this direction's projection is (T, B) at xp + (d 4H + r) T B
    for (int r = 0; r < rows; ++r) {
      const float* __restrict xr = xp + ((size_t)(d * rows + r) * t_len + t) * b;
      const float br = bias[r];
      float* __restrict ar = acc.data() + (size_t)r * bp;
      for (int j = 0; j < b; ++j) ar[j] = ar[j] + (xr[j] + br);
    }
    float* __restrict ga = acc.data();
    for (size_t e = 0; e < (size_t)rows * bp; ++e) ga[e] = sigmoid(ga[e]);
    const float* __restrict gi = acc.data();
    const float* __restrict gf = gi + hb;
    const float* __restrict gg = gf + hb;
    const float* __restrict go = gg + hb;
    float* __restrict cc = c.data();
    float* __restrict hh = hcur.data();
    for (size_t e = 0; e < hb; ++e) {
      float cn = gf[e] * cc[e] + gi[e] * (2.0f * gg[e] - 1.0f);
      cc[e] = cn;
      hh[e] = go[e] * tanh_(cn);
    }
    for (int i = 0; i < hid; ++i)
      std::memcpy(out + ((size_t)(d * hid + i) * t_len + t) * b, hh + (size_t)i * bp,
                  sizeof(float) * b);
    if (dots)
      for (int i = 0; i < hid; ++i)
        for (int j = 0; j < b; ++j) ht[(size_t)j * hid + i] = hh[(size_t)i * bp + j];
  }
}

}  // namespace

extern "C" {

// Version of this interface (checked by the loader).
int bilstm_abi(void) { return 2; }

// xp (2, 4H, T, B) = [weight_ih; weight_ih_reverse] x, bias_fwd and bias_bwd (4H), w_fwd and
// w_bwd (4H, H), out (2H, T, B); threads: 1 runs the directions
// one after the other, 2 side by side. Returns 0; 1 for a hidden size that is not a multiple
// of 16 or an empty shape (the caller uses the MLX step then).
int bilstm_layer(const float* xp, const float* bias_fwd, const float* bias_bwd,
                 const float* w_fwd, const float* w_bwd, float* out, int hid, int t_len, int b,
                 int threads) {
  if (hid % 16 != 0 || hid <= 0 || t_len <= 0 || b <= 0) return 1;
  if (threads >= 2) {
    std::thread back(run_direction, xp, bias_bwd, w_bwd, out, hid, t_len, b, 1);
    run_direction(xp, bias_fwd, w_fwd, out, hid, t_len, b, 0);
    back.join();
  } else {
    run_direction(xp, bias_fwd, w_fwd, out, hid, t_len, b, 0);
    run_direction(xp, bias_bwd, w_bwd, out, hid, t_len, b, 1);
  }
  return 0;
}

// The gate activations alone, for tests against mlx_layers.sigmoid_jit / tanh_jit.
void bilstm_activations(const float* x, float* sig, float* tnh, long n) {
  for (long i = 0; i < n; ++i) {
    sig[i] = sigmoid(x[i]);
    tnh[i] = tanh_(x[i]);
  }
}

}  // extern "C"
