// One bidirectional LSTM layer of segmentation-3.0 on the CPU: the whole time loop in C++.
//
// Why: MLX's CPU backend pays ~30 us per kernel call and runs elementwise work scalar and on one
// thread, so a 589-step loop of small ops costs far more than its arithmetic. Here each step is
// one register-blocked h @ W_hh^T and one vectorised gate pass; the two directions run on two
// threads. Time-major (T, B, features) in and out, so layers chain without transposes. Built at
// run time by ports.common.native (g++ -O3 -march=native -ffp-contract=off), like MLX's own
// mx.compile kernels; the pure-MLX step stays the fallback.
//
// Numerics mirror the pure-MLX "jit" step (model.py _step_math with mlx_layers.sigmoid_jit /
// tanh_jit): the same float32 formulas op for op (bit for bit), no contraction outside the dot
// products (BLAS uses FMA too), the input projection added after the dot product as sgemm
// (beta = 1) does. Only the dot products' summation order may differ from OpenBLAS's.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "native_vec.h"

namespace {

using namespace ports_native;  // NOLINT: vf8, load8, store8, splat8, kTileRows

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

// The recurrent products acc (B x 4H) = h (B x H) @ W_hh^T (H x 4H), the gates as the vector
// dimension (any batch fills the vectors), in register tiles of up to kTileRows batch rows x 32
// gate columns (native_vec.h). wp: W_hh^T packed as (4H / 32) panels of (H x 32), so a tile
// reads one contiguous 16-KB panel (the (H, 4H) rows, 2 KB apart, would all fall into a few L1
// sets: 2x slower).
void gemm(const float* h, const float* wp, float* acc, int b, int hid) {
  const int ld = 4 * hid;  // a multiple of 64 (hid % 16 == 0 is checked)
  float tile[kTileRows * kPanel];
  for (int b0 = 0; b0 < b; b0 += kTileRows) {
    const int nr = std::min(kTileRows, b - b0);
    for (int col = 0; col < ld; col += kPanel) {
      tile_rows(nr, [&](int r, int) { return h + (size_t)(b0 + r) * hid; }, 1, hid,
                wp + (size_t)col * hid, tile);
      for (int r = 0; r < nr; ++r)
        std::memcpy(acc + (size_t)(b0 + r) * ld + col, tile + r * kPanel, sizeof tile / kTileRows);
    }
  }
}

// One direction, time-major. xp: (T, B, 8H) = x [W_ih; W_ih_reverse]^T without the bias; bias:
// (4H) this direction's; wt: (H, 4H) = weight_hh^T of this direction (g rows pre-scaled by 2
// in all three); out: (T, B, 2H), this direction's h at columns [d H, d H + H).
void run_direction(const float* xp, const float* bias, const float* wt, float* out, int hid,
                   int t_len, int b, int d) {
  const int g4 = 4 * hid;
  std::vector<float> acc((size_t)b * g4), h((size_t)b * hid, 0.0f), c((size_t)b * hid, 0.0f);
  std::vector<float> wp((size_t)hid * g4);  // W_hh^T in (4H / 32) panels of (H x 32)
  for (int col = 0; col < g4; col += kPanel)
    for (int k = 0; k < hid; ++k)
      std::memcpy(wp.data() + (size_t)col * hid + (size_t)k * kPanel, wt + (size_t)k * g4 + col,
                  sizeof(float) * kPanel);
  for (int s = 0; s < t_len; ++s) {
    const int t = d == 0 ? s : t_len - 1 - s;  // the backward direction walks time backwards
    gemm(h.data(), wp.data(), acc.data(), b, hid);
    // + (W_ih x_t + bias), rounded as the MLX step's addmm(bias, W_ih, x) then addmm(that,
    // W_hh, h); then one sigmoid over all gates
    for (int j = 0; j < b; ++j) {
      const float* __restrict xr = xp + ((size_t)t * b + j) * 2 * g4 + (size_t)d * g4;
      float* __restrict ar = acc.data() + (size_t)j * g4;
      for (int r = 0; r < g4; ++r) ar[r] = sigmoid(ar[r] + (xr[r] + bias[r]));
    }
    for (int j = 0; j < b; ++j) {
      const float* __restrict gi = acc.data() + (size_t)j * g4;
      const float* __restrict gf = gi + hid;
      const float* __restrict gg = gf + hid;
      const float* __restrict go = gg + hid;
      float* __restrict cc = c.data() + (size_t)j * hid;
      float* __restrict hh = h.data() + (size_t)j * hid;
      float* __restrict o = out + ((size_t)t * b + j) * 2 * hid + (size_t)d * hid;
      for (int i = 0; i < hid; ++i) {
        float cn = gf[i] * cc[i] + gi[i] * (2.0f * gg[i] - 1.0f);
        cc[i] = cn;
        hh[i] = go[i] * tanh_(cn);
        o[i] = hh[i];
      }
    }
  }
}

}  // namespace

extern "C" {

// Version of this interface (checked by the loader).
int bilstm_abi(void) { return 3; }

// xp (T, B, 8H) = x [weight_ih; weight_ih_reverse]^T, bias_fwd and bias_bwd (4H), wt_fwd and
// wt_bwd (H, 4H) = weight_hh^T, out (T, B, 2H); threads: 1 runs the directions
// one after the other, 2 side by side. Returns 0; 1 for a hidden size that is not a multiple
// of 16 or an empty shape (the caller uses the MLX step then).
int bilstm_layer(const float* xp, const float* bias_fwd, const float* bias_bwd,
                 const float* wt_fwd, const float* wt_bwd, float* out, int hid, int t_len, int b,
                 int threads) {
  if (hid % 16 != 0 || hid <= 0 || t_len <= 0 || b <= 0) return 1;
  if (threads >= 2) {
    std::thread back(run_direction, xp, bias_bwd, wt_bwd, out, hid, t_len, b, 1);
    run_direction(xp, bias_fwd, wt_fwd, out, hid, t_len, b, 0);
    back.join();
  } else {
    run_direction(xp, bias_fwd, wt_fwd, out, hid, t_len, b, 0);
    run_direction(xp, bias_bwd, wt_bwd, out, hid, t_len, b, 1);
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
