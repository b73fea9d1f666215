// The flow estimator's blocks on the CPU, channels-last (B, T, D):
// - transformer_blocks: a run of BasicTransformerBlocks (no attention mask), one call per run:
//   x = x + to_out(softmax(q k^T / sqrt(d)) v), q, k, v from LayerNorm1(x);
//   x = x + W2 gelu(W1 LayerNorm3(x) + b1) + b2;
// - resnet_block: CausalResnetBlock1D without a mask: h = mish(LN(conv3(pad2(x)))) + t_proj;
//   out = mish(LN(conv3(pad2(h)))) + res_conv(x); the k = 3 causal convs as GEMMs over the
//   padded rows (three consecutive rows are one contiguous K = 3 C row).
//
// Why: in MLX each block is ~40 kernels on one core besides the GEMMs (LayerNorm, the softmax's
// reductions and exp, GELU are scalar or SSE2 loops), and the GEMMs at T = 150 run at ~80
// GFLOP/s in OpenBLAS. Here the GEMMs use 6 x 32 register tiles over packed weight panels, the
// elementwise work is vectorised, and two threads split the token rows (GEMMs) and the
// (batch, head) pairs (attention), meeting at a barrier around the attention. Built at run time
// by ports.common.native; the compiled MLX block stays the fallback.
//
// GELU's erf, the softmax's exp and Mish's exp are mlx_fastmath.fast_erf,
// mlx_layers.exp_nonpos_jit and mlx_layers.exp_arith, op for op (no contraction outside the dot
// products).
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "native_vec.h"

namespace {

using namespace ports_native;  // NOLINT: vf8, load8, store8, splat8, kTileRows

// ---- elementwise, as the MLX path computes them --------------------------------------------
constexpr float kEA0 = -2.72614225801306e-10f, kEA1 = 2.77068142495902e-08f,
                kEA2 = -2.10102402082508e-06f, kEA3 = -5.69250639462346e-05f,
                kEA4 = -7.34990630326855e-04f, kEA5 = -2.95459980854025e-03f,
                kEA6 = -1.60960333262415e-02f;
constexpr float kEB0 = -1.45660718464996e-05f, kEB1 = -2.13374055278905e-04f,
                kEB2 = -1.68282697438203e-03f, kEB3 = -7.37332916720468e-03f,
                kEB4 = -1.42647390514189e-02f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

inline float gelu(float x) {  // 0.5 x (1 + erf(x / sqrt 2)), fast_erf in Estrin form
  float e = x * kInvSqrt2;
  e = std::min(std::max(e, -4.0f), 4.0f);
  float y = e * e, y2 = y * y;
  float p = (y2 * y2) * (kEA0 * y2 + (kEA1 * y + kEA2)) + (y2 * (kEA3 * y + kEA4) + (kEA5 * y + kEA6));
  float q = (y2 * y2) * kEB0 + (y2 * (kEB1 * y + kEB2) + (kEB3 * y + kEB4));
  return 0.5f * x * (1.0f + e * p / q);
}

constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
constexpr float kClamp = 87.33654f, kRound = 12582912.0f, kLog2e = 1.4426950408889634f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;

inline float exp_nonpos(float x) {  // exp(x), x <= 0; 0 where n = 126 (exp < 2.1e-38)
  float a = std::fabs(x);
  a = a < kClamp ? a : kClamp;
  float k = kRound + kLog2e * a;
  int32_t n = static_cast<int32_t>(k) & 127;
  int32_t bits = (127 - n) << 23;
  float pw;
  std::memcpy(&pw, &bits, 4);
  pw = n == 126 ? 0.0f : pw;
  float nf = (a * kLog2e + kRound) - kRound;
  float u = (nf * kLn2Hi - a) + nf * kLn2Lo;
  float u2 = u * u;
  float poly = ((kP4 * u + kP5) + u2 * (kP2 * u + kP3)) + (u2 * u2) * (kP0 * u + kP1);
  float q = u + u2 * poly;
  return pw * q + pw;
}

constexpr float kExpLo = -87.33654f, kExpHi = 88.72283f;

inline float exp_arith(float x) {  // Cephes expf as mlx_layers.exp_arith
  float xc = std::min(std::max(x, kExpLo), kExpHi);
  float n = std::floor(xc * kLog2e + 0.5f);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = ((((kP0 * r + kP1) * r + kP2) * r + kP3) * r + kP4) * r + kP5;
  float y = p * (r * r) + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, 4);
  return x < kExpLo ? 0.0f : y * two_n;
}

inline float mish(float x) {  // x tanh(softplus x) as mlx_fastmath.mish: x n / (n + 2)
  float e = exp_arith(std::min(x, 20.0f));
  float n = e * (e + 2.0f);
  return x * (n / (n + 2.0f));
}

void layer_norm(const float* x, const float* w, const float* b, int d, float* out) {
  double s = 0.0;
  for (int i = 0; i < d; ++i) s += x[i];
  const float mean = (float)(s / d);
  double v = 0.0;
  for (int i = 0; i < d; ++i) {
    float c = x[i] - mean;
    v += (double)c * c;
  }
  const float rstd = 1.0f / std::sqrt((float)(v / d) + 1e-5f);
  for (int i = 0; i < d; ++i) out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

// ---- GEMM: out (rows x n) = A (rows x k, row stride lda) @ panels (n / 32 x k x 32) ----------
constexpr int kCols = kPanel;

// rows [r0, r1) of A; epi(row, col0, const float* acc32) stores a 32-column block
template <class Epi>
void gemm(const float* a, long lda, int k, const float* panels, int n, long r0, long r1,
          Epi epi) {
  float acc[kTileRows * kCols];
  for (int col = 0; col < n; col += kCols) {
    const float* panel = panels + (size_t)col * k;
    for (long t = r0; t < r1; t += kTileRows) {
      const long nr = std::min<long>(kTileRows, r1 - t);
      const float* at = a + (size_t)t * lda;
      tile_rows((int)nr, [&](int r, int) { return at + (size_t)r * lda; }, 1, k, panel, acc);
      for (long r = 0; r < nr; ++r) epi(t + r, col, acc + r * kCols);
    }
  }
}

// ---- threads meeting at barriers -------------------------------------------------------------
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  long gen_ = 0;
};

struct Block {  // one block's packed parameters
  const float *n1w, *n1b, *wqkv, *wo, *bo, *n3w, *n3b, *w1, *b1, *w2, *b2;
};

}  // namespace

extern "C" {

int estimator_abi(void) { return 1; }

// x (B, T, D) updated in place by `nblocks` blocks; params: per block 11 pointers in the order
// n1w, n1b (D), wqkv (3 H dh / 32, D, 32), wo (D / 32, H dh, 32), bo (D), n3w, n3b (D),
// w1 (F / 32, D, 32), b1 (F), w2 (D / 32, F, 32), b2 (D). D, dh and F multiples of 32.
// Returns 0; 1 for bad sizes.
int transformer_blocks(float* x, int batch, int t_len, int d, int heads, int dh, int ff,
                       int nblocks, const float* const* params, int threads) {
  const int inner = heads * dh;
  if (d % kCols || dh % kCols || ff % kCols || batch <= 0 || t_len <= 0 || threads <= 0)
    return 1;
  const long rows = (long)batch * t_len;
  const int tp = (t_len + kCols - 1) / kCols * kCols;  // keys padded for the score panels
  std::vector<float> norm((size_t)rows * d), qkv((size_t)rows * 3 * inner),
      attn((size_t)rows * inner), hidden((size_t)rows * ff);
  const float scale = 1.0f / std::sqrt((float)dh);  // MLX: q * d ** -0.5 (float32 constant)
  Barrier barrier(threads);
  auto work = [&](int tid) {
    const long r0 = rows * tid / threads, r1 = rows * (tid + 1) / threads;
    std::vector<float> kp((size_t)tp * dh), vp((size_t)t_len * inner), sc((size_t)t_len * tp);
    for (int bi = 0; bi < nblocks; ++bi) {
      const float* const* p = params + (size_t)bi * 11;
      Block blk{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]};
      for (long r = r0; r < r1; ++r)
        layer_norm(x + (size_t)r * d, blk.n1w, blk.n1b, d, norm.data() + (size_t)r * d);
      gemm(norm.data(), d, d, blk.wqkv, 3 * inner, r0, r1, [&](long r, int col, const float* a) {
        float* o = qkv.data() + (size_t)r * 3 * inner + col;
        if (col < inner)
          for (int v = 0; v < kCols; ++v) o[v] = a[v] * scale;
        else
          std::memcpy(o, a, sizeof(float) * kCols);
      });
      barrier.wait();
      // attention per (batch, head): scores = q k^T, softmax, @ v
      for (int u = tid; u < batch * heads; u += threads) {
        const int b = u / heads, h = u % heads;
        const float* base = qkv.data() + (size_t)b * t_len * 3 * inner;
        // k^T as panels of 32 keys: kp[(key / 32) * dh * 32 + j * 32 + key % 32] = k[key][j]
        std::fill(kp.begin(), kp.end(), 0.0f);
        for (int key = 0; key < t_len; ++key) {
          const float* kr = base + (size_t)key * 3 * inner + inner + h * dh;
          float* dst = kp.data() + (size_t)(key / kCols) * dh * kCols + key % kCols;
          for (int j = 0; j < dh; ++j) dst[(size_t)j * kCols] = kr[j];
        }
        gemm(base + h * dh, 3 * inner, dh, kp.data(), tp, 0, t_len,
             [&](long r, int col, const float* a) {
               std::memcpy(sc.data() + (size_t)r * tp + col, a, sizeof(float) * kCols);
             });
        for (int r = 0; r < t_len; ++r) {
          float* s = sc.data() + (size_t)r * tp;
          float m = s[0];
          for (int c = 1; c < t_len; ++c) m = std::max(m, s[c]);
          for (int c = 0; c < t_len; ++c) s[c] = exp_nonpos(s[c] - m);
          float sum = 0.0f;
          for (int c = 0; c < t_len; ++c) sum += s[c];
          for (int c = 0; c < t_len; ++c) s[c] = s[c] / sum;
        }
        // v as panels of 32 of its dh columns: vp[(j / 32) * T * 32 + key * 32 + j % 32]
        for (int key = 0; key < t_len; ++key) {
          const float* vr = base + (size_t)key * 3 * inner + 2 * inner + h * dh;
          for (int j0 = 0; j0 < dh; j0 += kCols)
            std::memcpy(vp.data() + (size_t)j0 * t_len + (size_t)key * kCols, vr + j0,
                        sizeof(float) * kCols);
        }
        gemm(sc.data(), tp, t_len, vp.data(), dh, 0, t_len,
             [&](long r, int col, const float* a) {
               std::memcpy(attn.data() + ((size_t)b * t_len + r) * inner + h * dh + col, a,
                           sizeof(float) * kCols);
             });
      }
      barrier.wait();
      // x += to_out(attn) + bo; x += W2 gelu(W1 LN3(x) + b1) + b2 (rows of this thread)
      gemm(attn.data(), inner, inner, blk.wo, d, r0, r1, [&](long r, int col, const float* a) {
        float* o = x + (size_t)r * d + col;
        for (int v = 0; v < kCols; ++v) o[v] = (a[v] + blk.bo[col + v]) + o[v];
      });
      for (long r = r0; r < r1; ++r)
        layer_norm(x + (size_t)r * d, blk.n3w, blk.n3b, d, norm.data() + (size_t)r * d);
      gemm(norm.data(), d, d, blk.w1, ff, r0, r1, [&](long r, int col, const float* a) {
        float* o = hidden.data() + (size_t)r * ff + col;
        for (int v = 0; v < kCols; ++v) o[v] = gelu(a[v] + blk.b1[col + v]);
      });
      gemm(hidden.data(), ff, ff, blk.w2, d, r0, r1, [&](long r, int col, const float* a) {
        float* o = x + (size_t)r * d + col;
        for (int v = 0; v < kCols; ++v) o[v] = (a[v] + blk.b2[col + v]) + o[v];
      });
      // the next block's LayerNorm and q/k/v read only these rows: no barrier before it
    }
  };
  run_threads(threads, work);
  return 0;
}

// x (B, T, cin) -> out (B, T, cout): CausalResnetBlock1D without a mask. w1 (cout / 32,
// 3 cin, 32), w2 (cout / 32, 3 cout, 32), wr (cout / 32, cin, 32) packed from (cout, 3, cin) /
// (cout, 1, cin); b1, n1w, n1b, b2, n2w, n2b, br (cout); tproj (B, cout) = mlp(mish(t_emb)).
// Returns 0; 1 for bad sizes.
int resnet_block(const float* x, int batch, int t_len, int cin, int cout, const float* w1,
                 const float* b1, const float* n1w, const float* n1b, const float* tproj,
                 const float* w2, const float* b2, const float* n2w, const float* n2b,
                 const float* wr, const float* br, float* out, int threads) {
  if (cout % kCols || batch <= 0 || t_len <= 0 || cin <= 0 || threads <= 0) return 1;
  const long tp = t_len + 2;  // two zero rows in front: the causal padding
  std::vector<float> xpad((size_t)batch * tp * cin, 0.0f), hpad((size_t)batch * tp * cout, 0.0f);
  Barrier barrier(threads);
  auto work = [&](int tid) {
    const long r0 = (long)t_len * tid / threads, r1 = (long)t_len * (tid + 1) / threads;
    for (int b = 0; b < batch; ++b)
      std::memcpy(xpad.data() + ((size_t)b * tp + 2 + r0) * cin,
                  x + ((size_t)b * t_len + r0) * cin, sizeof(float) * (r1 - r0) * cin);
    barrier.wait();
    for (int b = 0; b < batch; ++b) {  // h = mish(LN(conv1)) + tproj, into hpad
      float* hb = hpad.data() + (size_t)b * tp * cout;
      gemm(xpad.data() + (size_t)b * tp * cin, cin, 3 * cin, w1, cout, r0, r1,
           [&](long r, int col, const float* a) {
             float* o = hb + (size_t)(r + 2) * cout + col;
             for (int v = 0; v < kCols; ++v) o[v] = a[v] + b1[col + v];
           });
      for (long r = r0; r < r1; ++r) {
        float* row = hb + (size_t)(r + 2) * cout;
        layer_norm(row, n1w, n1b, cout, row);
        for (int c = 0; c < cout; ++c) row[c] = mish(row[c]) + tproj[(size_t)b * cout + c];
      }
    }
    barrier.wait();
    for (int b = 0; b < batch; ++b) {  // out = mish(LN(conv2(h))) + res_conv(x)
      float* ob = out + (size_t)b * t_len * cout;
      gemm(hpad.data() + (size_t)b * tp * cout, cout, 3 * cout, w2, cout, r0, r1,
           [&](long r, int col, const float* a) {
             float* o = ob + (size_t)r * cout + col;
             for (int v = 0; v < kCols; ++v) o[v] = a[v] + b2[col + v];
           });
      for (long r = r0; r < r1; ++r) {
        float* row = ob + (size_t)r * cout;
        layer_norm(row, n2w, n2b, cout, row);
        for (int c = 0; c < cout; ++c) row[c] = mish(row[c]);
      }
      gemm(x + (size_t)b * t_len * cin, cin, cin, wr, cout, r0, r1,
           [&](long r, int col, const float* a) {
             float* o = ob + (size_t)r * cout + col;
             for (int v = 0; v < kCols; ++v) o[v] = o[v] + (a[v] + br[col + v]);
           });
    }
  };
  run_threads(threads, work);
  return 0;
}

}  // extern "C"
