"""S3Gen flow decoder (chatterbox ``flow_matching.py`` ``CausalConditionalCFM`` with the
``decoder.py`` ``ConditionalDecoder`` estimator, matcha/diffusers blocks) in MLX: the causal
U-net-like velocity estimator and the Euler ODE solver over it, with classifier-free guidance
(standard: cosine t schedule) or without (meanflow: linear schedule, ``time_embed_mixer``).

Parameter paths equal chatterbox's ``flow.decoder.*`` keys minus the prefix. Tensors are
channels-last (B, T, C) inside.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common.mlx_fastmath import (compiled_method, fused_gelu, fused_mish,  # noqa: E402
                                       fused_softmax, silu)
from ports.common import mlx_layers, native  # noqa: E402
from ports.common.mlx_layers import Conv1d, LayerNorm, Linear, ParameterFree, pad_time  # noqa: E402

from .config import FlowDecoderConfig  # noqa: E402


def masked(x, mask):
    return x if mask is None else x * mask


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
        self.linear_1 = Linear(in_channels, time_embed_dim)
        self.linear_2 = Linear(time_embed_dim, time_embed_dim)

    def __call__(self, x):
        return self.linear_2(silu(self.linear_1(x)))


class CausalBlock1D(nn.Module):
    """block = [CausalConv1d k3, Transpose, LayerNorm(channels), Transpose, Mish]; masked in/out."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = [Conv1d(dim, dim_out, 3, bias=True), ParameterFree(), LayerNorm(dim_out, eps=1e-5)]

    @compiled_method
    def __call__(self, x, mask):
        y = self.block[0](pad_time(masked(x, mask), 2, 0))
        return masked(fused_mish(self.block[2](y)), mask)


class CausalResnetBlock1D(nn.Module):
    """On the CPU without a mask (float32, channels a multiple of 32) in ``estimator.cpp``; else
    compiled MLX."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = [ParameterFree(), Linear(time_emb_dim, dim_out)]
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = Conv1d(dim, dim_out, 1, bias=True)

    def __call__(self, x, mask, t_emb):
        cout = self.res_conv.weight.shape[0]
        lib = (native_estimator() if mask is None and x.dtype == mx.float32 and cout % 32 == 0
               else None)
        return self._mlx(x, mask, t_emb) if lib is None else self._native(lib, x, t_emb)

    def _native(self, lib, x, t_emb):
        p = self._packed()
        tproj = self.mlp[1](fused_mish(t_emb))
        mx.eval(x, tproj)
        xn, tn = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, tproj))
        b, t, cin = xn.shape
        out = np.empty((b, t, p["cout"]), np.float32)
        f = native.f32
        if lib.resnet_block(f(xn), b, t, cin, p["cout"], f(p["w1"]), f(p["b1"]), f(p["n1w"]),
                            f(p["n1b"]), f(tn), f(p["w2"]), f(p["b2"]), f(p["n2w"]), f(p["n2b"]),
                            f(p["wr"]), f(p["br"]), f(out), native.threads()):
            raise ValueError(f"resnet block: {cin} -> {p['cout']} channels not supported natively")
        return mx.array(out)

    def _packed(self):
        """The kernel's arrays (conv weights as 32-column panels over k * C_in), built once per
        set of parameter arrays."""
        c1, n1 = self.block1.block[0], self.block1.block[2]
        c2, n2 = self.block2.block[0], self.block2.block[2]
        params = dict(w1=c1.weight, b1=c1.bias, n1w=n1.weight, n1b=n1.bias, w2=c2.weight,
                      b2=c2.bias, n2w=n2.weight, n2b=n2.bias, wr=self.res_conv.weight,
                      br=self.res_conv.bias)

        def pack():
            out = {k: (native.panels(v) if k[0] == "w" else np.ascontiguousarray(v, np.float32))
                   for k, v in params.items()}
            return dict(out, cout=params["w1"].shape[0])
        return mlx_layers.derived(self, "packed", list(params.values()), pack)

    @compiled_method
    def _mlx(self, x, mask, t_emb):
        h = self.block1(x, mask)
        h = h + self.mlp[1](fused_mish(t_emb))[:, None, :]
        h = self.block2(h, mask)
        return h + self.res_conv(masked(x, mask))


class Attention(nn.Module):
    """diffusers Attention as configured by BasicTransformerBlock: q/k/v without bias, out with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = Linear(dim, inner, bias=False)
        self.to_k = Linear(dim, inner, bias=False)
        self.to_v = Linear(dim, inner, bias=False)
        self.to_out = [Linear(inner, dim)]

    def __call__(self, x, bias):
        b, t, _ = x.shape
        h, d = self.heads, self.dim_head
        q = self.to_q(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        k = self.to_k(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        v = self.to_v(x).reshape(b, t, h, d).transpose(0, 2, 1, 3)
        scores = (q * (d ** -0.5)) @ k.transpose(0, 1, 3, 2)
        if bias is not None:  # (B, 1, 1, T); None: no padding, the bias is all zero
            scores = scores + bias
        out = fused_softmax(scores) @ v
        return self.to_out[0](out.transpose(0, 2, 1, 3).reshape(b, t, h * d))


class GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = Linear(dim_in, dim_out)

    def __call__(self, x):
        return fused_gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.net = [GELUProj(dim, dim * mult), ParameterFree(), Linear(dim * mult, dim)]

    def __call__(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm3 = LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim, ff_mult)

    @compiled_method
    def __call__(self, x, bias):
        x = self.attn1(self.norm1(x), bias) + x
        return self.ff(self.norm3(x)) + x

    def packed(self) -> list:
        """This block's arrays for ``estimator.cpp`` (weights as 32-column panels), built once
        per set of parameter arrays."""
        a, ff = self.attn1, self.ff
        params = [self.norm1.weight, self.norm1.bias, a.to_q.weight, a.to_k.weight, a.to_v.weight,
                  a.to_out[0].weight, a.to_out[0].bias, self.norm3.weight, self.norm3.bias,
                  ff.net[0].proj.weight, ff.net[0].proj.bias, ff.net[2].weight, ff.net[2].bias]

        def pack():
            n1w, n1b, wq, wk, wv, wo, bo, n3w, n3b, w1, b1, w2, b2 = (np.asarray(p, np.float32)
                                                                      for p in params)
            vec = [np.ascontiguousarray(v) for v in (n1w, n1b, bo, n3w, n3b, b1, b2)]
            return [vec[0], vec[1], native.panels(np.concatenate([wq, wk, wv])),
                    native.panels(wo), vec[2], vec[3], vec[4], native.panels(w1), vec[5],
                    native.panels(w2), vec[6]]
        return mlx_layers.derived(self, "packed", params, pack)


_I = ctypes.c_int


def native_estimator():
    """``estimator.cpp`` (ctypes), or None: GPU, not Linux, no compiler, AUDIO_PORTS_NATIVE=0."""
    return mlx_layers.cpu_kernels(str(Path(__file__).with_name("estimator.cpp")), 1, {
        "transformer_blocks": ([native.F32] + [_I] * 7 + [ctypes.POINTER(ctypes.c_void_p), _I],
                               _I),
        "resnet_block": ([native.F32] + [_I] * 4 + [native.F32] * 12 + [_I], _I)})


def transformer_blocks(blocks, x, bias):
    """``x = block(x, bias)`` for each block: in ``estimator.cpp`` on the CPU (float32, no
    padding bias, sizes in multiples of 32), else the compiled MLX blocks."""
    a = blocks[0].attn1
    d, inner = x.shape[-1], a.heads * a.dim_head
    ff = blocks[0].ff.net[0].proj.weight.shape[0]
    lib = (native_estimator() if bias is None and x.dtype == mx.float32
           and d % 32 == 0 and a.dim_head % 32 == 0 and ff % 32 == 0 else None)
    if lib is None:
        for tb in blocks:
            x = tb(x, bias)
        return x
    arrays = [arr for tb in blocks for arr in tb.packed()]
    ptrs = (ctypes.c_void_p * len(arrays))(*(arr.ctypes.data for arr in arrays))
    mx.eval(x)
    out = np.array(x, dtype=np.float32, copy=True, order="C")  # updated in place
    b, t, _ = out.shape
    if lib.transformer_blocks(native.f32(out), b, t, d, a.heads, a.dim_head, ff, len(blocks),
                              ptrs, native.threads()):
        raise ValueError(f"transformer blocks: sizes D={d}, dh={a.dim_head}, F={ff} not supported")
    return mx.array(out)


class ConditionalDecoder(nn.Module):
    """Causal U-net-like estimator with channels=[256]: one down, 12 mid, one up block."""

    def __init__(self, cfg: FlowDecoderConfig | None = None, meanflow: bool = False):
        super().__init__()
        cfg = cfg or FlowDecoderConfig()
        in_channels, channels = cfg.in_channels, cfg.channels
        self.in_channels = in_channels
        self.meanflow = meanflow
        ted = channels * 4
        self.time_mlp = TimestepEmbedding(in_channels, ted)

        def tblocks():
            return [BasicTransformerBlock(channels, cfg.num_heads, cfg.head_dim, cfg.ff_mult)
                    for _ in range(cfg.n_blocks)]

        self.down_blocks = [[CausalResnetBlock1D(in_channels, channels, ted), tblocks(),
                             Conv1d(channels, channels, 3, bias=True)]]
        self.mid_blocks = [[CausalResnetBlock1D(channels, channels, ted), tblocks()]
                           for _ in range(cfg.num_mid_blocks)]
        self.up_blocks = [[CausalResnetBlock1D(2 * channels, channels, ted), tblocks(),
                           Conv1d(channels, channels, 3, bias=True)]]
        self.final_block = CausalBlock1D(channels, channels)
        self.final_proj = Conv1d(channels, cfg.out_channels, 1, bias=True)
        if meanflow:
            self.time_embed_mixer = Linear(2 * ted, ted, bias=False)

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
        x = transformer_blocks(tbs, resnet(x, mask, temb), bias)
        skip = x
        x = down(pad_time(masked(x, mask), 2, 0))
        for resnet, tbs in self.mid_blocks:
            x = transformer_blocks(tbs, resnet(x, mask, temb), bias)
        resnet, tbs, up = self.up_blocks[0]
        x = mx.concatenate([x[:, : skip.shape[1]], skip], axis=-1)
        x = transformer_blocks(tbs, resnet(x, mask, temb), bias)
        x = up(pad_time(masked(x, mask), 2, 0))
        x = self.final_block(x, mask)
        return masked(self.final_proj(masked(x, mask)), mask)


def cosine_t_span(n_timesteps: int) -> np.ndarray:
    """torch.linspace(0, 1, n+1) (float32) then 1 - cos(t * 0.5 * pi), in float32."""
    t = linspace01_f32(n_timesteps)
    return (np.float32(1) - np.cos((t * np.float32(0.5 * math.pi)).astype(np.float32)
                                   .astype(np.float64)).astype(np.float32)).astype(np.float32)


def linspace01_f32(n: int) -> np.ndarray:
    """torch.linspace(0, 1, n + 1) in float32: torch's CPU linspace fills the first half from the
    start and the second half from the end."""
    steps = n + 1
    step = np.float32(1.0) / np.float32(n)
    i = np.arange(steps)
    half = steps // 2
    out = np.where(i < half, np.float32(0) + step * i.astype(np.float32),
                   np.float32(1) - step * (steps - 1 - i).astype(np.float32))
    return out.astype(np.float32)


class CausalConditionalCFM(nn.Module):
    """The estimator and chatterbox's Euler solver over it (``solve_euler``)."""

    def __init__(self, cfg: FlowDecoderConfig | None = None, meanflow: bool = False):
        super().__init__()
        cfg = cfg or FlowDecoderConfig()
        self.inference_cfg_rate = cfg.inference_cfg_rate
        self.estimator = ConditionalDecoder(cfg, meanflow=meanflow)

    def solve_euler(self, z, mu, spks, cond, *, n_timesteps: int, meanflow: bool, progress=None,
                    return_stages: bool = False):
        """Euler ODE from z (1, T, 80) at t = 0 to t = 1, channels-last like mu and cond (1, T, 80);
        spks (1, 80). Standard: cosine t schedule, CFG batch of two (the unconditional half has zero
        mu, speaker and cond). Meanflow: linear schedule, the estimator also gets r = next t.
        Returns x(1) (1, T, 80) and, with return_stages, the estimator outputs, velocities and
        states (1, 80, T) per step and the t span."""
        est = self.estimator
        dtype = z.dtype
        cfg_rate = self.inference_cfg_rate
        t_span = linspace01_f32(n_timesteps) if meanflow else cosine_t_span(n_timesteps)
        xt = z
        raw, vel, states = [], [], []
        steps = range(n_timesteps)
        if progress is not None:
            steps = progress(steps)
        # On the CPU the transformer blocks run in C++ on two threads (the CFG batch of two split
        # between them); without them the CFG halves run as two batch-1 calls on two streams.
        parallel = contextlib.nullcontext() if native_estimator() else mlx_layers.concurrent()
        with parallel as streams:
            for i in steps:
                t = mx.array(t_span[i: i + 1]).astype(dtype)
                r = mx.array(t_span[i + 1: i + 2]).astype(dtype)
                dt = mx.array(t_span[i + 1: i + 2] - t_span[i: i + 1]).astype(dtype)  # r - t
                if meanflow:
                    dxdt = est(xt, None, mu, t, spks, cond, r=r)
                    out = dxdt
                elif streams:
                    with mx.stream(streams[0]):
                        out_c = est(xt, None, mu, t, spks, cond)
                    with mx.stream(streams[1]):
                        out_u = est(xt, None, mx.zeros_like(mu), t, mx.zeros_like(spks),
                                    mx.zeros_like(cond))
                    out = mx.concatenate([out_c, out_u], axis=0)
                    dxdt = (1.0 + cfg_rate) * out_c - cfg_rate * out_u
                else:
                    x_in = mx.concatenate([xt, xt], axis=0)
                    mu_in = mx.concatenate([mu, mx.zeros_like(mu)], axis=0)
                    spk_in = mx.concatenate([spks, mx.zeros_like(spks)], axis=0)
                    cond_in = mx.concatenate([cond, mx.zeros_like(cond)], axis=0)
                    t_in = mx.concatenate([t, t])
                    out = est(x_in, None, mu_in, t_in, spk_in, cond_in)
                    dxdt = (1.0 + cfg_rate) * out[:1] - cfg_rate * out[1:]
                xt = xt + dt * dxdt
                mx.eval(xt)
                if return_stages:
                    raw.append(out.transpose(0, 2, 1))
                    vel.append(dxdt.transpose(0, 2, 1))
                    states.append(xt.transpose(0, 2, 1))
        if return_stages:
            return xt, dict(estimator_out=raw, velocities=vel, states=states, t_span=t_span)
        return xt
