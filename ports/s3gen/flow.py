"""S3Gen flow (chatterbox `CausalMaskedDiffWithXvec`) in MLX.

tokens + prompt tokens -> embedding -> upsampling conformer encoder (25 Hz -> 50 Hz) -> `encoder_proj`
(mu) -> conditional flow matching: Euler ODE on the `ConditionalDecoder` estimator, with CFG
(standard, 10 cosine steps) or without (meanflow, 2 linear steps, `time_embed_mixer`).

Parameter paths equal chatterbox's `flow.*` state-dict keys minus the `flow.` prefix. Tensors are
channels-last inside (B, T, C); conv weights are stored MLX-style (out, k, in) (see FLOW_RULES).
Batch size one, no padding (what S3Gen runs).
"""
from __future__ import annotations

import math
import os
import re
from functools import lru_cache

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

VOCAB_SIZE = 6561
SPK_EMBED_DIM = 192
MEL_DIM = 80
TOKEN_MEL_RATIO = 2
PRE_LOOKAHEAD_LEN = 3
CFG_RATE = 0.7  # chatterbox CFM_PARAMS.inference_cfg_rate
_CACHE_LIMIT = 1 << 30  # MLX buffer cache during inference (bytes)


# ----------------------------------------------------------------------------------------------
# small building blocks
# ----------------------------------------------------------------------------------------------
class _Slot(nn.Module):
    """Parameter-free placeholder keeping list indices equal to torch's nn.Sequential indices."""


class Conv1d(nn.Module):
    """Valid 1-D convolution on (B, T, C); weight (out, k, in). Padding is done by the caller.

    k > 1 runs as im2col + one matmul: it goes through the (preloaded) BLAS and is much faster
    than mlx's CPU conv.
    """

    def __init__(self, in_ch: int, out_ch: int, k: int, bias: bool = True):
        super().__init__()
        self.weight = mx.zeros((out_ch, k, in_ch))
        if bias:
            self.bias = mx.zeros((out_ch,))

    def __call__(self, x):
        out_ch, k, in_ch = self.weight.shape
        t_out = x.shape[1] - k + 1
        if k == 1:
            cols = x
        else:
            cols = mx.concatenate([x[:, i:i + t_out] for i in range(k)], axis=-1)
        y = cols @ self.weight.reshape(out_ch, k * in_ch).T
        if "bias" in self:
            y = y + self.bias
        return y


def _masked(x, mask):
    return x if mask is None else x * mask


def _pad_t(x, left: int, right: int):
    return mx.pad(x, [(0, 0), (left, right), (0, 0)])


# MLX's CPU exp/erf/tanh are scalar libm loops (~5-15x slower than torch's vectorised ones) and
# dominate the estimator (softmax over T x T scores, exact-GELU FFs). The versions below use only
# arithmetic ops, which MLX runs vectorised, at float32 accuracy (checked in the tests):
# exp: Cephes expf (max rel. error 8e-8, vs 4e-6 for mx.exp); erf: Eigen's float rational
# approximation (max abs. error 4e-7 on [-4, 4], erf = +-1 beyond in float32).
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
          5.0000001201e-1)
_EXP_LO, _EXP_HI = -87.33654, 88.72283


def fast_exp(x):
    if x.dtype != mx.float32:  # half precision: MLX's own (the tricks below are float32 bit-level)
        return mx.exp(x)
    xc = mx.clip(x, _EXP_LO, _EXP_HI)
    n = mx.floor(xc * 1.44269504088896341 + 0.5)
    r = xc - n * 0.693359375  # Cody-Waite split of ln 2
    r = r - n * -2.12194440e-4
    p = _EXP_P[0]
    for c in _EXP_P[1:]:
        p = p * r + c
    y = p * (r * r) + r + 1.0
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    return mx.where(x < _EXP_LO, 0.0, y * two_n)


_ERF_A = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_B = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def fast_erf(x):
    if x.dtype != mx.float32:
        return mx.erf(x)
    x = mx.clip(x, -4.0, 4.0)
    x2 = x * x
    p = _ERF_A[0]
    for a in _ERF_A[1:]:
        p = p * x2 + a
    q = _ERF_B[0]
    for b in _ERF_B[1:]:
        q = q * x2 + b
    return x * p / q


def softmax(s, axis: int = -1):
    if s.dtype != mx.float32:
        return mx.softmax(s, axis=axis, precise=True)
    e = fast_exp(s - mx.max(s, axis=axis, keepdims=True))
    return e / mx.sum(e, axis=axis, keepdims=True)


def mish(x):
    # x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2); e^x capped where the ratio is 1
    if x.dtype != mx.float32:
        return x * mx.tanh(mx.logaddexp(x, 0.0))
    e = fast_exp(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


def silu(x):
    return x * mx.sigmoid(x)


def gelu(x):  # exact (erf) GELU, as torch F.gelu(approximate="none")
    return 0.5 * x * (1.0 + fast_erf(x * (1.0 / math.sqrt(2.0))))


def _fused(fn):
    """`mx.compile(fn)` (fuses the ~25 arithmetic passes; MLX caches the kernels on disk), or
    `fn` itself where compiling fails (no C++ compiler for MLX's CPU JIT) or
    AUDIO_PORTS_MLX_COMPILE=0. Probed once on a tiny input, since MLX compiles lazily at eval."""
    state = {}

    def run(x, *args, **kw):
        f = state.get(x.dtype)
        if f is None:
            f = fn
            if os.environ.get("AUDIO_PORTS_MLX_COMPILE", "1") != "0":
                try:
                    c = mx.compile(fn)
                    mx.eval(c(mx.zeros((2, 3), x.dtype)))
                    f = c
                except Exception:  # noqa: BLE001  (any JIT failure: run uncompiled)
                    f = fn
            state[x.dtype] = f
        return f(x, *args, **kw)

    run.__wrapped__ = fn
    return run


gelu_f = _fused(gelu)
mish_f = _fused(mish)
softmax_f = _fused(softmax)


def leaky_relu(x, slope=0.01):
    return mx.where(x >= 0, x, x * slope)


class LayerNorm(nn.Module):
    def __init__(self, dims: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.weight, self.bias, self.eps)


# ----------------------------------------------------------------------------------------------
# encoder (chatterbox transformer/upsample_encoder.py, ESPnet rel-pos conformer)
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _espnet_rel_pos_emb(size: int, d_model: int = 512) -> np.ndarray:
    """EspnetRelPositionalEncoding.position_encoding: rows for relative positions size-1 .. -(size-1)."""
    # torch computes the table in float32: the float32 products are rounded the same way here
    position = np.arange(size, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float64).astype(np.float32).astype(np.float64)
                      * -(math.log(10000.0) / d_model)).astype(np.float32)
    arg_pos = (position * div_term).astype(np.float32).astype(np.float64)
    arg_neg = ((-1 * position) * div_term).astype(np.float32).astype(np.float64)
    pos = np.zeros((size, d_model), np.float32)
    neg = np.zeros((size, d_model), np.float32)
    pos[:, 0::2] = np.sin(arg_pos)
    pos[:, 1::2] = np.cos(arg_pos)
    neg[:, 0::2] = np.sin(arg_neg)
    neg[:, 1::2] = np.cos(arg_neg)
    return np.concatenate([pos[::-1], neg[1:]], axis=0)[None]  # (1, 2*size-1, d_model)


class LinearNoSubsampling(nn.Module):
    """Linear + LayerNorm (+ dropout), then x * sqrt(d) and the rel-pos table."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = [nn.Linear(idim, odim), LayerNorm(odim, eps=1e-5)]
        self.xscale = math.sqrt(odim)
        self.odim = odim

    def __call__(self, x):
        x = self.out[1](self.out[0](x))
        pos_emb = mx.array(_espnet_rel_pos_emb(x.shape[1], self.odim)).astype(x.dtype)
        return x * self.xscale, pos_emb


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int = 8, n_feat: int = 512):
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = mx.zeros((n_head, self.d_k))
        self.pos_bias_v = mx.zeros((n_head, self.d_k))

    @staticmethod
    def rel_shift(x):
        # ESPnet trick, same memory reinterpretation as torch's view(): (B,H,T,2T-1) -> (B,H,T,T)
        b, h, t1, n = x.shape
        x = mx.concatenate([mx.zeros((b, h, t1, 1), x.dtype), x], axis=-1)
        x = x.reshape(b, h, n + 1, t1)[:, :, 1:].reshape(b, h, t1, n)
        return x[..., : n // 2 + 1]

    def __call__(self, x, pos_emb):
        b, t, _ = x.shape
        q = self.linear_q(x).reshape(b, t, self.h, self.d_k)
        k = self.linear_k(x).reshape(b, t, self.h, self.d_k).transpose(0, 2, 1, 3)
        v = self.linear_v(x).reshape(b, t, self.h, self.d_k).transpose(0, 2, 1, 3)
        p = self.linear_pos(pos_emb).reshape(pos_emb.shape[0], -1, self.h, self.d_k).transpose(0, 2, 1, 3)
        q_u = (q + self.pos_bias_u).transpose(0, 2, 1, 3)
        q_v = (q + self.pos_bias_v).transpose(0, 2, 1, 3)
        ac = q_u @ k.transpose(0, 1, 3, 2)
        bd = q_v @ p.transpose(0, 1, 3, 2)
        if ac.shape != bd.shape:
            bd = self.rel_shift(bd)
        scores = (ac + bd) / math.sqrt(self.d_k)
        # batch one without padding: the key mask is all true, masked_fill is a no-op
        attn = softmax_f(scores)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int = 512, hidden: int = 2048):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.w_2 = nn.Linear(hidden, idim)

    def __call__(self, x):
        return self.w_2(silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """normalize_before=True, no macaron, no conv module; LayerNorm eps 1e-12."""

    def __init__(self, size: int = 512, heads: int = 8, units: int = 2048):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, units)
        self.norm_ff = LayerNorm(size, eps=1e-12)
        self.norm_mha = LayerNorm(size, eps=1e-12)

    def __call__(self, x, pos_emb):
        x = x + self.self_attn(self.norm_mha(x), pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    def __init__(self, channels: int = 512, pre_lookahead_len: int = PRE_LOOKAHEAD_LEN):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = Conv1d(channels, channels, pre_lookahead_len + 1)
        self.conv2 = Conv1d(channels, channels, 3)

    def __call__(self, x):
        y = leaky_relu(self.conv1(_pad_t(x, 0, self.pre_lookahead_len)), 0.01)
        y = self.conv2(_pad_t(y, 2, 0))
        return y + x


class EncoderUpsample1D(nn.Module):
    """Nearest x2 repeat, left pad 2*stride, conv k = 2*stride+1."""

    def __init__(self, channels: int = 512, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.conv = Conv1d(channels, channels, stride * 2 + 1)

    def __call__(self, x):
        x = mx.repeat(x, self.stride, axis=1)
        return self.conv(_pad_t(x, self.stride * 2, 0))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, size: int = 512, heads: int = 8, units: int = 2048, num_blocks: int = 6,
                 num_up_blocks: int = 4):
        super().__init__()
        self.embed = LinearNoSubsampling(size, size)
        self.pre_lookahead_layer = PreLookaheadLayer(size, PRE_LOOKAHEAD_LEN)
        self.encoders = [ConformerEncoderLayer(size, heads, units) for _ in range(num_blocks)]
        self.up_layer = EncoderUpsample1D(size, 2)
        self.up_embed = LinearNoSubsampling(size, size)
        self.up_encoders = [ConformerEncoderLayer(size, heads, units) for _ in range(num_up_blocks)]
        self.after_norm = LayerNorm(size, eps=1e-5)

    def __call__(self, xs):
        xs, pos_emb = self.embed(xs)
        xs = self.pre_lookahead_layer(xs)
        for layer in self.encoders:
            xs = layer(xs, pos_emb)
        xs = self.up_layer(xs)
        xs, pos_emb = self.up_embed(xs)
        for layer in self.up_encoders:
            xs = layer(xs, pos_emb)
        return self.after_norm(xs)


# ----------------------------------------------------------------------------------------------
# decoder estimator (chatterbox decoder.py ConditionalDecoder, matcha/diffusers blocks)
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _sinusoidal_freqs(dim: int) -> np.ndarray:
    half = dim // 2
    c = math.log(10000) / (half - 1)
    # torch: exp(arange(half).float() * -c) in float32; correctly rounded here
    arg = (np.arange(half, dtype=np.float32) * np.float32(-c)).astype(np.float32)
    return np.exp(arg.astype(np.float64)).astype(np.float32)


def sinusoidal_pos_emb(t, dim: int, scale: float = 1000):
    """matcha SinusoidalPosEmb: t (B,) -> (B, dim) = [sin, cos] of scale * t * freqs.

    Computed in float32 (the float32 freqs promote torch's half t) and cast back to t's dtype."""
    freqs = mx.array(_sinusoidal_freqs(dim))
    emb = (scale * t.astype(mx.float32))[:, None] * freqs[None]
    return mx.concatenate([mx.sin(emb), mx.cos(emb)], axis=-1).astype(t.dtype)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def __call__(self, x):
        return self.linear_2(silu(self.linear_1(x)))


class CausalBlock1D(nn.Module):
    """block = [CausalConv1d k3, Transpose, LayerNorm(channels), Transpose, Mish]; masked in/out."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = [Conv1d(dim, dim_out, 3), _Slot(), LayerNorm(dim_out, eps=1e-5)]

    def __call__(self, x, mask):
        y = self.block[0](_pad_t(_masked(x, mask), 2, 0))
        return _masked(mish_f(self.block[2](y)), mask)


class CausalResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = [_Slot(), nn.Linear(time_emb_dim, dim_out)]
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = Conv1d(dim, dim_out, 1)

    def __call__(self, x, mask, t_emb):
        h = self.block1(x, mask)
        h = h + self.mlp[1](mish_f(t_emb))[:, None, :]
        h = self.block2(h, mask)
        return h + self.res_conv(_masked(x, mask))


class Attention(nn.Module):
    """diffusers Attention as configured by BasicTransformerBlock: q/k/v without bias, out with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = [nn.Linear(inner, dim)]

    def __call__(self, x, bias):
        b, t, _ = x.shape
        h, d = self.heads, self.dim_head
        q = self.to_q(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        k = self.to_k(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        v = self.to_v(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        scores = (q * (d ** -0.5)) @ k.transpose(0, 1, 3, 2)
        if bias is not None:  # (B, 1, 1, T); None: no padding, the bias is all zero
            scores = scores + bias
        out = softmax_f(scores) @ v
        return self.to_out[0](out.transpose(0, 2, 1, 3).reshape(b, t, h * d))


class GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def __call__(self, x):
        return gelu_f(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = [GELUProj(dim, dim * mult), _Slot(), nn.Linear(dim * mult, dim)]

    def __call__(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm3 = LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def __call__(self, x, bias):
        x = self.attn1(self.norm1(x), bias) + x
        return self.ff(self.norm3(x)) + x


class ConditionalDecoder(nn.Module):
    """Causal U-net-like estimator with channels=[256]: one down, 12 mid, one up block."""

    def __init__(self, in_channels: int = 320, out_channels: int = MEL_DIM, channels: int = 256,
                 n_blocks: int = 4, num_mid_blocks: int = 12, num_heads: int = 8, head_dim: int = 64,
                 meanflow: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.meanflow = meanflow
        ted = channels * 4
        self.time_mlp = TimestepEmbedding(in_channels, ted)

        def tblocks():
            return [BasicTransformerBlock(channels, num_heads, head_dim) for _ in range(n_blocks)]

        self.down_blocks = [[CausalResnetBlock1D(in_channels, channels, ted), tblocks(),
                             Conv1d(channels, channels, 3)]]
        self.mid_blocks = [[CausalResnetBlock1D(channels, channels, ted), tblocks()]
                           for _ in range(num_mid_blocks)]
        self.up_blocks = [[CausalResnetBlock1D(2 * channels, channels, ted), tblocks(),
                           Conv1d(channels, channels, 3)]]
        self.final_block = CausalBlock1D(channels, channels)
        self.final_proj = Conv1d(channels, out_channels, 1)
        if meanflow:
            self.time_embed_mixer = nn.Linear(2 * ted, ted, bias=False)

    def time_embedding(self, t, r=None):
        emb = self.time_mlp(sinusoidal_pos_emb(t, self.in_channels))
        if self.meanflow:
            r_emb = self.time_mlp(sinusoidal_pos_emb(r, self.in_channels))
            emb = self.time_embed_mixer(mx.concatenate([emb, r_emb], axis=1))
        return emb

    def __call__(self, x, mask, mu, t, spks, cond, r=None):
        """Channels-last: x, mu, cond (B, T, 80); mask (B, T, 1) or None (no padding: every
        multiplication by it and the attention bias are exact no-ops, skipped); t, r (B,);
        spks (B, 80) -> (B, T, 80)."""
        temb = self.time_embedding(t, r)
        b, n, _ = x.shape
        x = mx.concatenate([x, mu, mx.broadcast_to(spks[:, None, :], (b, n, spks.shape[-1])), cond], axis=-1)
        # key-padding bias as mask_to_bias: (1 - mask) * -1e10
        bias = None
        if mask is not None:
            bias = ((1.0 - mask[:, :, 0].astype(mx.float32)) * -1.0e10)[:, None, None, :].astype(x.dtype)

        resnet, tbs, down = self.down_blocks[0]
        x = resnet(x, mask, temb)
        for tb in tbs:
            x = tb(x, bias)
        skip = x
        x = down(_pad_t(_masked(x, mask), 2, 0))
        for resnet, tbs in self.mid_blocks:
            x = resnet(x, mask, temb)
            for tb in tbs:
                x = tb(x, bias)
        resnet, tbs, up = self.up_blocks[0]
        x = mx.concatenate([x[:, : skip.shape[1]], skip], axis=-1)
        x = resnet(x, mask, temb)
        for tb in tbs:
            x = tb(x, bias)
        x = up(_pad_t(_masked(x, mask), 2, 0))
        x = self.final_block(x, mask)
        return _masked(self.final_proj(_masked(x, mask)), mask)


class CausalConditionalCFM(nn.Module):
    def __init__(self, meanflow: bool = False):
        super().__init__()
        self.estimator = ConditionalDecoder(meanflow=meanflow)


def cosine_t_span(n_timesteps: int) -> np.ndarray:
    """torch.linspace(0, 1, n+1) (float32) then 1 - cos(t * 0.5 * pi), in float32."""
    t = _linspace01_f32(n_timesteps)
    return (np.float32(1) - np.cos((t * np.float32(0.5 * math.pi)).astype(np.float32)
                                   .astype(np.float64)).astype(np.float32)).astype(np.float32)


def _linspace01_f32(n: int) -> np.ndarray:
    # torch's CPU linspace fills the first half from the start and the second half from the end
    steps = n + 1
    step = np.float32(1.0) / np.float32(n)
    i = np.arange(steps)
    half = steps // 2
    out = np.where(i < half, np.float32(0) + step * i.astype(np.float32),
                   np.float32(1) - step * (steps - 1 - i).astype(np.float32))
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# the flow
# ----------------------------------------------------------------------------------------------
class CausalMaskedDiffWithXvec(nn.Module):
    def __init__(self, meanflow: bool = False, input_size: int = 512, output_size: int = MEL_DIM,
                 spk_embed_dim: int = SPK_EMBED_DIM, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        self.meanflow = meanflow
        self.vocab_size = vocab_size
        self.output_size = output_size
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = UpsampleConformerEncoder(input_size)
        self.encoder_proj = nn.Linear(input_size, output_size)
        self.decoder = CausalConditionalCFM(meanflow=meanflow)

    # -- input checks -------------------------------------------------------------------------
    def _tokens(self, tok, name: str) -> mx.array:
        a = np.asarray(tok)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[0] != 1:
            raise ValueError(f"{name}: expected shape (1, n) or (n,), got {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ValueError(f"{name}: token ids must be integers")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            bad = a[(a < 0) | (a >= self.vocab_size)]
            raise ValueError(f"{name}: token ids must lie in [0, {self.vocab_size - 1}], "
                             f"got {bad[:8].tolist()}")
        return mx.array(a.astype(np.int32))

    @staticmethod
    def _check_len(length, n: int, name: str):
        if length is None:
            return
        v = np.asarray(length).reshape(-1)
        if v.size != 1 or int(v[0]) != n:
            raise ValueError(f"{name}={v.tolist()} must equal the number of tokens ({n}); "
                             "this port runs batch one without padding")

    # -- stages ---------------------------------------------------------------------------------
    def speaker_projection(self, embedding):
        e = mx.array(np.asarray(embedding, dtype=np.float32)).reshape(1, -1)
        e = e.astype(self.spk_embed_affine_layer.weight.dtype)
        # F.normalize(dim=1): x / max(||x||, 1e-12)
        norm = mx.sqrt(mx.sum(e * e, axis=1, keepdims=True))
        return self.spk_embed_affine_layer(e / mx.maximum(norm, 1e-12))

    def inference(self, token, token_len=None, prompt_token=None, prompt_token_len=None,
                  prompt_feat=None, embedding=None, *, finalize: bool = True, noise=None,
                  noised_mels=None, n_timesteps: int | None = None, meanflow: bool | None = None,
                  seed: int | None = None, return_stages: bool = False, progress=None):
        """chatterbox `flow.inference` for one utterance.

        token (1, n) int; prompt_token (1, n_p) int; prompt_feat (1, 2*n_p, 80) log-mel;
        embedding (1, 192) x-vector. noise: the initial ODE state z (1, 80, 2*(n_p+n)) (chatterbox's
        `randn_like(mu)`); drawn with mx.random (optionally `seed`) when None. noised_mels replaces
        the generated part of z as chatterbox does. Returns the generated mel (1, 80, 2*n) as an
        mx.array, plus a dict of intermediates with return_stages.
        """
        # MLX keeps only 32 MB of freed CPU buffers by default: the T x T attention buffers then
        # come back from the OS on every op (page faults, ~2x slower softmax at 7 s of audio)
        prev = mx.set_cache_limit(_CACHE_LIMIT)
        if prev > _CACHE_LIMIT:
            mx.set_cache_limit(prev)
        try:
            return self._inference(token, token_len, prompt_token, prompt_token_len, prompt_feat,
                                   embedding, finalize=finalize, noise=noise,
                                   noised_mels=noised_mels, n_timesteps=n_timesteps,
                                   meanflow=meanflow, seed=seed, return_stages=return_stages,
                                   progress=progress)
        finally:
            mx.set_cache_limit(prev)

    def _inference(self, token, token_len, prompt_token, prompt_token_len, prompt_feat, embedding,
                   *, finalize, noise, noised_mels, n_timesteps, meanflow, seed, return_stages,
                   progress):
        meanflow = self.meanflow if meanflow is None else meanflow
        if meanflow != self.meanflow:
            raise ValueError("meanflow inference needs a flow built with meanflow=True "
                             "(time_embed_mixer weights)" if meanflow else
                             "a meanflow flow (time_embed_mixer) only runs meanflow=True, as in chatterbox")
        if n_timesteps is None:
            n_timesteps = 2 if meanflow else 10
        if int(n_timesteps) < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
        if not finalize:
            # chatterbox 0.1.7 drops the last 3 tokens' frames from h but keeps the full-length
            # mask, and its solver then fails (mask/size mismatch): there is no result to match
            raise ValueError("finalize=False is not supported: chatterbox 0.1.7's flow fails on it "
                             "(streaming path); use finalize=True")
        if embedding is None:
            raise ValueError("embedding (speaker x-vector, shape (1, 192)) is required")
        tok = self._tokens(token, "token")
        if tok.shape[1] == 0:
            raise ValueError("token: empty token sequence")
        self._check_len(token_len, tok.shape[1], "token_len")
        if prompt_token is None:
            prompt_token = np.zeros((1, 0), np.int64)
        ptok = self._tokens(prompt_token, "prompt_token")
        self._check_len(prompt_token_len, ptok.shape[1], "prompt_token_len")
        if prompt_feat is None:
            prompt_feat = np.zeros((1, 0, self.output_size), np.float32)
        pf = np.asarray(prompt_feat, dtype=np.float32)
        if pf.ndim == 2:
            pf = pf[None]
        if pf.ndim != 3 or pf.shape[0] != 1 or pf.shape[2] != self.output_size:
            raise ValueError(f"prompt_feat: expected (1, frames, {self.output_size}), got {pf.shape}")
        emb_np = np.asarray(embedding, dtype=np.float32)
        if emb_np.size != SPK_EMBED_DIM:
            raise ValueError(f"embedding: expected {SPK_EMBED_DIM} values, got shape {emb_np.shape}")
        if not np.all(np.isfinite(emb_np)) or not np.all(np.isfinite(pf)):
            raise ValueError("embedding/prompt_feat contain NaN or Inf")

        stages = {}
        # float16/bfloat16 weights run in that dtype (chatterbox casts the solver inputs to the
        # estimator dtype); the returned mel is float32
        dtype = self.encoder_proj.weight.dtype
        spks = self.speaker_projection(emb_np)  # (1, 80)
        all_tok = mx.concatenate([ptok, tok], axis=1)
        x = self.input_embedding(all_tok)  # mask is all ones for batch one
        h = self.encoder(x)
        mel_len1 = pf.shape[1]
        mel_len2 = h.shape[1] - mel_len1
        if mel_len2 <= 0:
            raise ValueError(f"prompt_feat has {mel_len1} frames, more than the {h.shape[1]} "
                             "frames the tokens give")
        mu = self.encoder_proj(h)  # (1, T, 80) channels-last
        cond = mx.concatenate([mx.array(pf), mx.zeros((1, mel_len2, self.output_size))], axis=1)
        cond = cond.astype(dtype)
        total = h.shape[1]

        if noise is None:
            key = mx.random.key(seed) if seed is not None else None
            z = mx.random.normal((1, self.output_size, total), key=key)
        else:
            z = np.asarray(noise, dtype=np.float32)
            if z.shape != (1, self.output_size, total):
                raise ValueError(f"noise: expected shape (1, {self.output_size}, {total}) "
                                 f"(prompt + generated frames), got {z.shape}")
            z = mx.array(z)
        if noised_mels is not None:
            nm = mx.array(np.asarray(noised_mels, dtype=np.float32))
            if nm.ndim != 3 or nm.shape[:2] != (1, self.output_size) or nm.shape[2] > total:
                raise ValueError(f"noised_mels: expected (1, {self.output_size}, <= {total}), got {nm.shape}")
            z = mx.concatenate([z[..., : total - nm.shape[-1]], nm], axis=-1)
        z = z.astype(dtype)
        if return_stages:
            mx.eval(spks, x, h, mu)
            stages.update(embedding=spks, token_embedding=x, encoder_out=h,
                          mu=mu.transpose(0, 2, 1), noise=z)

        xt = z.transpose(0, 2, 1)  # (1, T, 80)
        est = self.decoder.estimator
        if meanflow:
            t_span = _linspace01_f32(int(n_timesteps))
        else:
            t_span = cosine_t_span(int(n_timesteps))
        raw, vel, states = [], [], []
        steps = range(int(n_timesteps))
        if progress is not None:
            steps = progress(steps)
        for i in steps:
            t = mx.array(t_span[i: i + 1]).astype(dtype)
            r = mx.array(t_span[i + 1: i + 2]).astype(dtype)
            dt = mx.array(t_span[i + 1: i + 2] - t_span[i: i + 1]).astype(dtype)  # float32 r - t
            if meanflow:
                dxdt = est(xt, None, mu, t, spks, cond, r=r)
                out = dxdt
            else:
                # CFG batch: the unconditional half has zero mu, speaker and cond
                x_in = mx.concatenate([xt, xt], axis=0)
                mu_in = mx.concatenate([mu, mx.zeros_like(mu)], axis=0)
                spk_in = mx.concatenate([spks, mx.zeros_like(spks)], axis=0)
                cond_in = mx.concatenate([cond, mx.zeros_like(cond)], axis=0)
                t_in = mx.concatenate([t, t])
                out = est(x_in, None, mu_in, t_in, spk_in, cond_in)
                dxdt = (1.0 + CFG_RATE) * out[:1] - CFG_RATE * out[1:]
            xt = xt + dt * dxdt
            mx.eval(xt)
            if return_stages:
                raw.append(out.transpose(0, 2, 1))
                vel.append(dxdt.transpose(0, 2, 1))
                states.append(xt.transpose(0, 2, 1))
        mel = xt[:, mel_len1:].transpose(0, 2, 1).astype(mx.float32)
        if return_stages:
            stages.update(estimator_out=raw, velocities=vel, states=states, t_span=t_span)
            return mel, stages
        return mel


# ----------------------------------------------------------------------------------------------
# conversion rules: chatterbox `flow.*` keys -> this module's parameter paths
# ----------------------------------------------------------------------------------------------
# Conv1d weights: torch (out, in, k) -> MLX (out, k, in). Every other tensor keeps name and layout.
_CONV_WEIGHTS = (
    r"encoder\.pre_lookahead_layer\.conv[12]\.weight",
    r"encoder\.up_layer\.conv\.weight",
    r"decoder\.estimator\..*\.block\.0\.weight",       # CausalBlock1D convs
    r"decoder\.estimator\..*\.res_conv\.weight",
    r"decoder\.estimator\.(?:down|up)_blocks\.\d+\.2\.weight",  # causal down/up convs
    r"decoder\.estimator\.final_proj\.weight",
)


def flow_rules(prefix: str = "flow."):
    """Rules for source keys `prefix + <flow key>`, producing `prefix + <flow key>`."""
    from ports.common.convert import Rule, transpose

    p = re.escape(prefix)
    rules = [Rule(f"{p}(?:{pat})", fn=transpose(0, 2, 1)) for pat in _CONV_WEIGHTS]
    # everything else under the prefix is copied; the strict `expected` check of the KeyMap
    # still reports any key the port does not have
    rules.append(Rule(f"{p}(?:input_embedding|spk_embed_affine_layer|encoder|encoder_proj|decoder)\\..+"))
    return rules


FLOW_RULES = flow_rules("flow.")


def load_flow_state_dict(model: CausalMaskedDiffWithXvec, src, prefix: str = "flow.") -> None:
    """Strictly convert chatterbox flow tensors (keys `prefix + ...`, numpy) and load them."""
    from ports.common.convert import KeyMap
    from ports.common.mlx_weights import convert_into

    convert_into(model, KeyMap(flow_rules(prefix), what="s3gen flow weights"), src, prefix=prefix)
