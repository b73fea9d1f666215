"""HiFT vocoder (chatterbox ``models/s3gen/hifigan.py`` + ``f0_predictor.py``) in MLX.

Parameter paths equal chatterbox's ``mel2wav.*`` state-dict keys minus the prefix, with the
weight-norm pairs (``parametrizations.weight.original0/1``) folded into ``weight`` at conversion.
Activations are channels-last (B, T, C) inside; the public API takes mels as (B, 80, T) like the
original.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
from pathlib import Path

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common.convert import Combine, Rule, chain, transpose, weight_norm  # noqa: E402
from ports.common.mlx_fastmath import (compiled_method, fast_cos, fast_exp, fast_sin,  # noqa: E402
                                       sin_squared, tanh)
from ports.common import mlx_layers, native  # noqa: E402
from ports.common.mlx_layers import (Conv1d, ConvTranspose1d, Linear, ParameterFree,  # noqa: E402
                                     conv_transpose1d, leaky_relu, on_stream)

from .config import S3GEN_SR, HiFTConfig  # noqa: E402


def _pad(k: int, d: int = 1) -> int:
    return (k * d - d) // 2


def snake(x, alpha, inv_alpha):
    """HiFT Snake, x + 1 / (alpha + 1e-9) * sin(alpha x)^2, with inv_alpha = 1 / (alpha + 1e-9)."""
    return x + inv_alpha * sin_squared(x * alpha)


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.ones((channels,))

    def __call__(self, x):
        # torch's pow(sin, 2) is s * s; sin is arithmetic-only (fast_sin)
        return snake(x, self.alpha, 1.0 / (self.alpha + 1e-9))


_I = ctypes.c_int
_RESBLOCK_SIG = {"resblock": ([native.F32, _I, ctypes.c_long, _I, _I, _I, native.I32]
                              + [native.F32] * 8 + [_I], _I)}


def native_resblock():
    """``resblock.cpp`` (ctypes), or None: GPU, not Linux, no compiler, AUDIO_PORTS_NATIVE=0."""
    return mlx_layers.cpu_kernels(str(Path(__file__).with_name("resblock.cpp")), 1, _RESBLOCK_SIG)


class ResBlock(nn.Module):
    """HiFT ResBlock: per dilation, x + conv2(snake(conv1_d(snake(x)))). On the CPU (float32,
    channels a multiple of 32) in ``resblock.cpp`` (direct convs, two threads); else compiled
    MLX."""

    def __init__(self, channels: int, kernel_size: int, dilations):
        super().__init__()
        self.convs1 = [Conv1d(channels, channels, kernel_size, padding=_pad(kernel_size, d), dilation=d)
                       for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel_size, padding=_pad(kernel_size))
                       for _ in dilations]
        self.activations1 = [Snake(channels) for _ in dilations]
        self.activations2 = [Snake(channels) for _ in dilations]

    def __call__(self, x):
        lib = native_resblock() if x.dtype == mx.float32 and x.shape[-1] % 32 == 0 else None
        return self._mlx(x) if lib is None else self._native(lib, x)

    @compiled_method
    def _mlx(self, x):
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x

    def _packed(self):
        """The kernel's arrays, built once per set of parameter arrays."""
        convs, acts = self.convs1 + self.convs2, self.activations1 + self.activations2
        params = [m.weight for m in convs] + [m.bias for m in convs] + [a.alpha for a in acts]
        return mlx_layers.derived(self, "packed", params, self._pack)

    def _pack(self):
        def stack(arrays):
            return np.ascontiguousarray(np.stack([np.asarray(a, np.float32) for a in arrays]))

        inv = [1.0 / (a.alpha + 1e-9) for a in self.activations1 + self.activations2]  # as Snake
        mx.eval(inv)
        nd = len(self.convs1)
        return dict(
            dil=np.array([c.dilation for c in self.convs1], np.int32),
            w1=stack([native.panels(c.weight) for c in self.convs1]),  # (C/32, k C, 32)
            b1=stack([c.bias for c in self.convs1]),
            w2=stack([native.panels(c.weight) for c in self.convs2]),
            b2=stack([c.bias for c in self.convs2]),
            a1=stack([a.alpha for a in self.activations1]), i1=stack(inv[:nd]),
            a2=stack([a.alpha for a in self.activations2]), i2=stack(inv[nd:]))

    def _native(self, lib, x):
        p = self._packed()
        mx.eval(x)
        out = np.array(x, dtype=np.float32, copy=True, order="C")  # updated in place
        b, t, c = out.shape
        k = self.convs1[0].weight.shape[1]
        if lib.resblock(native.f32(out), b, t, c, k, len(self.convs1),
                        p["dil"].ctypes.data_as(native.I32),
                        *(native.f32(p[n]) for n in ("w1", "b1", "w2", "b2", "a1", "i1", "a2", "i2")),
                        native.threads()):
            raise ValueError(f"ResBlock: kernel size {k} or {c} channels not supported natively")
        return mx.array(out)


class ConvRNNF0Predictor(nn.Module):
    def __init__(self, in_channels: int = 80, cond_channels: int = 512):
        super().__init__()
        layers = []
        for i in range(5):
            layers.append(Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1))
            layers.append(ParameterFree())  # ELU
        self.condnet = layers  # keys condnet.0, .2, .4, .6, .8 like the torch Sequential
        self.classifier = Linear(cond_channels, 1)

    @compiled_method
    def __call__(self, x):
        """x: (B, T, 80) channels-last mel -> f0 (B, T) in Hz."""
        for conv in self.condnet[::2]:
            x = conv(x)
            x = mx.where(x > 0, x, fast_exp(mx.minimum(x, 0.0)) - 1.0)  # ELU (alpha 1), as MLX's
        return mx.abs(self.classifier(x)[..., 0])


class SourceModuleHnNSF(nn.Module):
    """Holds ``l_linear`` (9 -> 1); the sine generation is in ``HiFTGenerator.source``."""

    def __init__(self, harmonic_num: int):
        super().__init__()
        self.l_linear = Linear(harmonic_num + 1, 1)


def _frac(x):
    return x - mx.floor(x)


def _frac_mul(a, n):
    """frac(a * n) for float32 a and small integers n (< 2^9) without the product's rounding:
    Veltkamp-split a into 11 + 13 significant bits, so both partial products are exact."""
    c = a * 4097.0
    hi = c - (c - a)
    lo = a - hi
    return _frac(_frac(hi * n) + _frac(lo * n))


def _frac_cumsum(x, block: int = 16):
    """frac of the inclusive cumsum of x along the last axis, reduced modulo 1 (centred, to
    [-0.5, 0.5)) at every level of a blocked scan: partial sums stay below block / 2, so float32
    keeps ~1e-6 cycles however long the axis."""
    x = x - mx.round(x)
    n = x.shape[-1]
    if n <= block:
        return _frac(mx.cumsum(x, axis=-1))
    nb = -(-n // block)
    xb = mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, nb * block - n)]).reshape(*x.shape[:-1], nb, block)
    inner = mx.cumsum(xb, axis=-1)
    tot = _frac(inner[..., -1])
    offs = _frac(_frac_cumsum(tot, block) - tot)  # exclusive
    return _frac(inner + offs[..., None]).reshape(*x.shape[:-1], nb * block)[..., :n]


def _stft_kernels(n_fft: int):
    """Hann (periodic) windowed DFT as conv weights, and the windowed inverse (onesided)."""
    n = np.arange(n_fft)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # scipy get_window("hann", fftbins=True)
    k = np.arange(n_fft // 2 + 1)
    ang = 2 * np.pi * np.outer(k, n) / n_fft  # (F, N)
    fwd = np.concatenate([np.cos(ang) * win, -np.sin(ang) * win], 0)  # (2F, N): real then imag
    c = np.full(len(k), 2.0)
    c[0] = 1.0
    if n_fft % 2 == 0:
        c[-1] = 1.0
    inv = np.concatenate([c[:, None] * np.cos(ang), -c[:, None] * np.sin(ang)], 0) / n_fft * win  # (2F, N)
    return win, fwd, inv


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig | None = None):
        super().__init__()
        cfg = cfg or HiFTConfig()
        self.cfg = cfg
        C = cfg.base_channels
        nf = cfg.n_fft + 2
        self.m_source = SourceModuleHnNSF(cfg.nb_harmonics)
        self.conv_pre = Conv1d(cfg.in_channels, C, 7, padding=3)
        self.ups = [ConvTranspose1d(C // 2 ** i, C // 2 ** (i + 1), k, u, padding=(k - u) // 2)
                    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))]
        down = np.cumprod([1] + cfg.upsample_rates[::-1][:-1])[::-1]
        self.source_downs = []
        self.source_resblocks = []
        for i, (u, k, d) in enumerate(zip(down, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)):
            u = int(u)
            ch = C // 2 ** (i + 1)
            if u == 1:
                self.source_downs.append(Conv1d(nf, ch, 1))
            else:
                self.source_downs.append(Conv1d(nf, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = []
        for i in range(len(self.ups)):
            ch = C // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = Conv1d(ch, nf, 7, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        win, fwd, inv = _stft_kernels(cfg.n_fft)
        self._win = win
        # Constants are kept out of the parameter tree (leading underscore is not enough in MLX:
        # store as numpy and convert per call).
        self._stft_w = fwd.astype(np.float32)[:, :, None]  # (2F, N, 1) conv weight
        self._istft_w = inv.T.astype(np.float32)[None]  # (1, N, 2F) conv_transpose weight

    # ---- F0 and source -------------------------------------------------------------------
    def f0(self, mel):
        """mel (B, 80, T) -> f0 (B, T)."""
        return self.f0_predictor(mx.transpose(mel, (0, 2, 1)))

    def sine_source(self, f0, phase=None, noise=None, key=None):
        """SineGen + SourceModuleHnNSF merge: f0 (B, T) -> source (B, 1, T * 480).

        phase: (B, H+1) initial phases (the original draws Uniform(-pi, pi) and zeroes the
        fundamental's); noise: (B, H+1, T * 480) standard normal. Drawn from ``key`` when absent.
        F0 is constant per frame (nearest upsampling), so the phase is accumulated per frame
        (blocked cumsum of fractional cycles) and ramped inside the frame: a float32 cumsum over
        all samples drifts.
        """
        cfg = self.cfg
        B, T = f0.shape
        H = cfg.nb_harmonics + 1
        up = cfg.upsample_scale
        if key is not None:
            k1, k2 = mx.random.split(key)
        else:
            k1 = k2 = None
        if phase is None:
            phase = mx.random.uniform(-math.pi, math.pi, (B, H), key=k1)
            phase = mx.concatenate([mx.zeros((B, 1)), phase[:, 1:]], axis=1)
        if noise is None:
            noise = mx.random.normal((B, H, T * up), key=k2)
        return self._source(f0, phase, noise)

    @compiled_method
    def _source(self, f0, phase, noise):
        cfg = self.cfg
        B, T = f0.shape
        H = cfg.nb_harmonics + 1
        up = cfg.upsample_scale
        harm = mx.arange(1, H + 1, dtype=mx.float32)
        inc = (f0[:, None, :] * harm[None, :, None]) / cfg.sampling_rate  # (B, H, T) cycles/sample
        # fractional cycles of a whole frame, exactly; then an exclusive cumsum modulo 1
        frame = _frac_mul(inc, float(up))
        start = _frac(_frac_cumsum(frame) - frame)
        j = mx.arange(1, up + 1, dtype=mx.float32)  # the original's cumsum includes the sample
        cyc = _frac(start[..., None] + _frac_mul(inc[..., None], j))  # (B, H, T, up)
        cyc = cyc.reshape(B, H, T * up)
        sine = cfg.nsf_alpha * fast_sin(2 * math.pi * cyc + phase[:, :, None])
        uv = (f0 > cfg.nsf_voiced_threshold).astype(mx.float32)
        uv = mx.repeat(uv, up, axis=-1)[:, None, :]  # (B, 1, L)
        noise_amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
        sine = sine * uv + noise_amp * noise
        merged = tanh(self.m_source.l_linear(mx.transpose(sine, (0, 2, 1))))  # (B, L, 1)
        return mx.transpose(merged, (0, 2, 1))

    # ---- STFT / ISTFT ----------------------------------------------------------------------
    def _stft(self, s):
        """s (B, L) -> (B, L / hop + 1, 2F) channels-last, [real | imag], center=True reflect."""
        p = self.cfg.n_fft // 2
        L = s.shape[-1]
        if L <= p:
            raise ValueError(f"source of {L} samples is too short for the n_fft={self.cfg.n_fft} STFT")
        idx = np.concatenate([np.arange(p, 0, -1), np.arange(L), np.arange(L - 2, L - 2 - p, -1)])
        x = mx.take(s, mx.array(idx.astype(np.int32)), axis=-1)[..., None]
        return mx.conv1d(x, mx.array(self._stft_w), stride=self.cfg.hop_len)

    def _istft(self, spec_mag, spec_phase):
        """(B, F, 9) magnitude and phase -> (B, hop * (frames - 1)) like torch.istft(center=True)."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_len
        mag = mx.minimum(spec_mag, 1e2)
        z = mx.concatenate([mag * fast_cos(spec_phase), mag * fast_sin(spec_phase)], axis=-1)
        # inverse DFT + windowed overlap-add as one conv transpose (a matmul + overlap-add)
        y = conv_transpose1d(z, mx.array(self._istft_w), hop)[..., 0]  # (B, (F-1)*hop + n_fft)
        frames = spec_mag.shape[1]
        env = np.zeros((frames - 1) * hop + n_fft)
        for f in range(frames):
            env[f * hop:f * hop + n_fft] += self._win ** 2
        p = n_fft // 2
        n = hop * (frames - 1)
        env = env[p:p + n]
        if np.any(env < 1e-11):
            raise ValueError("ISTFT window envelope is zero")
        return y[:, p:p + n] / mx.array(env.astype(np.float32))

    # ---- decode ----------------------------------------------------------------------------
    def decode(self, mel, source, return_stages: bool = False):
        """mel (B, 80, T), source (B, 1, T * 480) -> waveform (B, T * 480) clamped to +-0.99."""
        cfg = self.cfg
        stages = {}
        s_stft = self._stft(source[:, 0, :])
        stages["s_stft"] = s_stft
        x = self.conv_pre(mx.transpose(mel, (0, 2, 1)))
        stages["conv_pre"] = x
        nk = len(cfg.resblock_kernel_sizes)
        # On the CPU without the C++ ResBlock (which takes both cores itself) the independent
        # branches run on two streams (one core each): the upsampling beside the source branch,
        # and the last kernel's ResBlock (the largest) beside the others.
        with (contextlib.nullcontext() if native_resblock() else mlx_layers.concurrent()) as streams:
            for i, up in enumerate(self.ups):
                with on_stream(streams, 0):
                    x = leaky_relu(x, cfg.lrelu_slope)
                    x = up(x)
                    if i == len(self.ups) - 1:
                        x = mx.concatenate([x[:, 1:2], x], axis=1)  # ReflectionPad1d((1, 0))
                stages[f"ups.{i}"] = x
                with on_stream(streams, 1):
                    si = self.source_resblocks[i](self.source_downs[i](s_stft))
                stages[f"source.{i}"] = si
                x = x + si
                rs = []
                for j in range(nk):
                    with on_stream(streams, int(j == nk - 1)):
                        rs.append(self.resblocks[i * nk + j](x))
                x = self._mean(*rs)
                stages[f"stage.{i}"] = x
            x = self.conv_post(leaky_relu(x, 0.01))  # F.leaky_relu default slope
            stages["conv_post"] = x
            y = self._spec_to_wav(x)
            stages["istft"] = y
            y = mx.clip(y, -cfg.audio_limit, cfg.audio_limit)
            if streams:
                mx.eval(y, *stages.values())  # while the BLAS is at one thread
        return (y, stages) if return_stages else y

    @compiled_method
    def _mean(self, *rs):
        """The original's ``xs / num_kernels`` (summed in order) as one fused pass."""
        xs = rs[0]
        for r in rs[1:]:
            xs = xs + r
        return xs / len(rs)

    @compiled_method
    def _spec_to_wav(self, x):
        """conv_post output (B, frames, n_fft + 2) -> ISTFT of exp(log-magnitude), sin(phase)."""
        nb = self.cfg.n_fft // 2 + 1
        magnitude = fast_exp(x[..., :nb])
        phase = fast_sin(x[..., nb:])  # the original's sin, kept
        return self._istft(magnitude, phase)

    def inference(self, mel, source=None, *, phase=None, noise=None, key=None, cache_source=None,
                  return_stages: bool = False):
        """mel (B, 80, T) -> (waveform (B, T * 480), source (B, 1, T * 480)[, stages]).

        ``source`` injects the excitation (e.g. the original's returned ``s``); otherwise it is
        generated from the predicted F0 with ``phase``/``noise`` (or drawn from ``key``).
        ``cache_source`` overwrites the first samples like the original.
        """
        if mel.ndim != 3 or mel.shape[1] != self.cfg.in_channels or mel.shape[2] < 1:
            raise ValueError(f"mel must be (B, {self.cfg.in_channels}, frames), got {tuple(mel.shape)}")
        stages = {}
        if source is None:
            f0 = self.f0(mel)
            stages["f0"] = f0
            source = self.sine_source(f0, phase=phase, noise=noise, key=key)
        else:
            expect = mel.shape[-1] * self.cfg.upsample_scale
            if source.ndim != 3 or source.shape[1] != 1 or source.shape[-1] != expect:
                raise ValueError(f"source must be (B, 1, {expect}) for {mel.shape[-1]} mel frames, "
                                 f"got {tuple(source.shape)}")
        if cache_source is not None and cache_source.shape[-1]:
            n = cache_source.shape[-1]
            source = mx.concatenate([cache_source, source[..., n:]], axis=-1)
        stages["source"] = source
        y, st = self.decode(mel, source, return_stages=True)
        stages.update(st)
        return (y, source, stages) if return_stages else (y, source)


def trim_fade(sr: int = S3GEN_SR) -> np.ndarray:
    """S3Token2Wav's 20 ms of silence followed by a 20 ms raised-cosine fade-in."""
    n = sr // 50
    fade = np.zeros(2 * n, dtype=np.float32)
    fade[n:] = (np.cos(np.linspace(np.pi, 0, n, dtype=np.float64)) + 1) / 2
    return fade


def apply_trim_fade(wav, sr: int = S3GEN_SR):
    fade = trim_fade(sr)
    n = min(len(fade), wav.shape[-1])
    head = wav[..., :n] * mx.array(fade[:n])
    return mx.concatenate([head, wav[..., n:]], axis=-1)


# torch layouts -> MLX: Conv1d (O, I, K) -> (O, K, I); ConvTranspose1d (I, O, K) -> (O, K, I).
_CONV = transpose(0, 2, 1)
_CONVT = transpose(1, 2, 0)


def hift_rules(prefix: str = "mel2wav."):
    """Rules for chatterbox keys ``prefix + <HiFT key>`` producing ``prefix + <port path>``: the
    weight-norm pairs folded into ``weight`` (g is per output channel of Conv1d and per *input*
    channel of ConvTranspose1d: dim 0 of the torch weight in both cases), convs to MLX layout."""
    import re

    p = re.escape(prefix)
    wn = r"\.parametrizations\.weight\.original"
    pair = [prefix + r"\1.parametrizations.weight.original0", prefix + r"\1.parametrizations.weight.original1"]
    return [
        Combine(rf"{p}(ups\.\d+){wn}[01]", pair, prefix + r"\1.weight", chain(weight_norm(dim=0), _CONVT)),
        Combine(rf"{p}(.+){wn}[01]", pair, prefix + r"\1.weight", chain(weight_norm(dim=0), _CONV)),
        Rule(rf"{p}source_downs\.\d+\.weight", fn=_CONV),
        Rule(rf"{p}.+\.(?:bias|alpha)"),
        Rule(rf"{p}(?:m_source\.l_linear|f0_predictor\.classifier)\.weight"),
    ]
