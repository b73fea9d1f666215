"""S3Gen flow token encoder (chatterbox ``transformer/upsample_encoder.py``, ESPnet rel-pos
conformer) in MLX: embedded tokens -> pre-lookahead conv -> 6 conformer blocks -> x2 upsampling
(25 Hz tokens -> 50 Hz mel frames) -> 4 conformer blocks.

Parameter paths equal chatterbox's ``flow.encoder.*`` keys minus the prefix. Batch size one, no
padding (what S3Gen runs): the attention key mask is all true, its masked_fill a no-op.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common.mlx_fastmath import compiled_method, fused_softmax, silu  # noqa: E402
from ports.common.mlx_layers import Conv1d, LayerNorm, Linear, leaky_relu, pad_time  # noqa: E402

from .config import FlowEncoderConfig  # noqa: E402


@lru_cache(maxsize=16)
def _espnet_rel_pos_emb(size: int, d_model: int) -> np.ndarray:
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
        self.out = [Linear(idim, odim), LayerNorm(odim, eps=1e-5)]
        self.xscale = math.sqrt(odim)
        self.odim = odim

    def __call__(self, x):
        x = self.out[1](self.out[0](x))
        pos_emb = mx.array(_espnet_rel_pos_emb(x.shape[1], self.odim)).astype(x.dtype)
        return x * self.xscale, pos_emb


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = Linear(n_feat, n_feat)
        self.linear_k = Linear(n_feat, n_feat)
        self.linear_v = Linear(n_feat, n_feat)
        self.linear_out = Linear(n_feat, n_feat)
        self.linear_pos = Linear(n_feat, n_feat, bias=False)
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
        attn = fused_softmax(scores)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden: int):
        super().__init__()
        self.w_1 = Linear(idim, hidden)
        self.w_2 = Linear(hidden, idim)

    def __call__(self, x):
        return self.w_2(silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """normalize_before=True, no macaron, no conv module; LayerNorm eps 1e-12."""

    def __init__(self, size: int, heads: int, units: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, units)
        self.norm_ff = LayerNorm(size, eps=1e-12)
        self.norm_mha = LayerNorm(size, eps=1e-12)

    @compiled_method
    def __call__(self, x, pos_emb):
        x = x + self.self_attn(self.norm_mha(x), pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    def __init__(self, channels: int, pre_lookahead_len: int):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = Conv1d(channels, channels, pre_lookahead_len + 1, bias=True)
        self.conv2 = Conv1d(channels, channels, 3, bias=True)

    def __call__(self, x):
        y = leaky_relu(self.conv1(pad_time(x, 0, self.pre_lookahead_len)), 0.01)
        y = self.conv2(pad_time(y, 2, 0))
        return y + x


class EncoderUpsample1D(nn.Module):
    """Nearest x2 repeat, left pad 2*stride, conv k = 2*stride+1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = Conv1d(channels, channels, stride * 2 + 1, bias=True)

    def __call__(self, x):
        x = mx.repeat(x, self.stride, axis=1)
        return self.conv(pad_time(x, self.stride * 2, 0))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: FlowEncoderConfig | None = None):
        super().__init__()
        cfg = cfg or FlowEncoderConfig()
        size, heads, units = cfg.size, cfg.attention_heads, cfg.linear_units
        self.embed = LinearNoSubsampling(size, size)
        self.pre_lookahead_layer = PreLookaheadLayer(size, cfg.pre_lookahead_len)
        self.encoders = [ConformerEncoderLayer(size, heads, units) for _ in range(cfg.num_blocks)]
        self.up_layer = EncoderUpsample1D(size, cfg.up_stride)
        self.up_embed = LinearNoSubsampling(size, size)
        self.up_encoders = [ConformerEncoderLayer(size, heads, units) for _ in range(cfg.num_up_blocks)]
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


