"""PyanNet (SincNet > 4-layer BiLSTM > 2 linear > powerset classifier) in MLX.

Layout: audio (B, 1, N) or (B, N) in, activations channels-last (B, T, C) inside, log-probs
(B, frames, 7) out, exactly as ``pyannote.audio.models.segmentation.PyanNet.forward``. Parameter
names mirror the original's state dict (see ``convert.py`` for the few differences).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()  # the optimized BLAS must be global before MLX loads
import mlx.nn as nn  # noqa: E402

from ports.common import mlx_layers, mlx_ops, native  # noqa: E402
from ports.common.mlx_layers import Conv1d, Linear, leaky_relu  # noqa: E402

from .config import (CONV_CHANNELS, CONV_KERNEL, POOL, SINC_FILTERS, SINC_KERNEL,
                     SegmentationConfig)

EPS = 1e-5  # torch.nn.InstanceNorm1d default
SINCNET_BATCH = 8
SLOPE = 0.01  # F.leaky_relu default


def _leaky_relu_arith(z):
    """``leaky_relu`` without Maximum (whose NaN branch stops g++ vectorising a fused loop):
    exact for z >= 0 (|z| - z = 0); for z < 0, z + 0.495 * (-2z) = 0.01 z up to one rounding
    of z (~6e-8 |z|)."""
    return z + (0.5 * (1.0 - SLOPE)) * (mx.abs(z) - z)


def max_pool3(x):
    """MaxPool1d(3, stride=3) over T of (B, T, C); floor mode drops the tail like torch."""
    b, t, c = x.shape
    n = t // POOL
    return x[:, : n * POOL].reshape(b, n, POOL, c).max(axis=2)


def _pool3_views(x):
    n = x.shape[1] // POOL
    return [x[:, j:n * POOL:POOL] for j in range(POOL)]


@mx.compile
def _abs_max3(a, b, c):
    return mx.maximum(mx.maximum(mx.abs(a), mx.abs(b)), mx.abs(c))


@mx.compile
def _max3(a, b, c):
    return mx.maximum(mx.maximum(a, b), c)


@mx.compile
def _centered_square(x, m):
    d = x - m
    return d * d


@mx.compile
def _norm_affine_leaky_relu(x, mean, scale, bias):
    # (x - mean) * scale + bias, not x * scale + (bias - mean * scale): on mostly padded chunks the
    # variance is tiny, scale huge, and the folded form cancels catastrophically.
    return _leaky_relu_arith((x - mean) * scale + bias)


def _sum_time(x):
    """Sum over T of channels-last (B, T, C) -> (B, 1, C) as ``mlx_ops.sum`` adds (a tree of
    4-element groups, zero-padded), without moving T last. A sequential float32 sum drifts: over
    long runs of one value (a padded chunk) 512-long blocks were 2e-5 off, which real
    segmentation-3.0 weights amplify past the original's own fp32 error."""
    g = mlx_ops.TREE
    while x.shape[1] > g:
        b, t, c = x.shape
        n = -(-t // g)
        if n * g != t:
            x = mx.pad(x, [(0, 0), (0, n * g - t), (0, 0)])
        x = x.reshape(b, n, g, c).sum(axis=2)
    return x.sum(axis=1, keepdims=True)


@mx.compile
def _affine(x, mean, scale, bias):
    return (x - mean) * scale + bias


def instance_norm(x, weight, bias, leaky: bool = False):
    """``InstanceNorm1d(C, affine=True)`` over T of channels-last (B, T, C), optionally followed
    by ``leaky_relu``: tree sums (two-pass variance, as ``mlx_ops.var``), then one fused pass
    (centre, scale by weight * rstd, shift)."""
    t = x.shape[1]
    mean = _sum_time(x) / t
    var = _sum_time(_centered_square(x, mean)) / t
    scale = weight * mx.rsqrt(var + EPS)
    return (_norm_affine_leaky_relu if leaky else _affine)(x, mean, scale, bias)


def norm_leaky_relu(x, weight, bias, pool: int = 1):
    """``leaky_relu(InstanceNorm1d(MaxPool1d(pool)(x)))`` (pool 1 or 3) on channels-last (B, T, C):
    in ``sincnet.cpp`` on the CPU (sums in double), else the MLX passes below."""
    lib = _native("sincnet") if x.dtype == mx.float32 else None
    if lib is None:
        if pool > 1:
            x = _max3(*_pool3_views(x))
        return instance_norm(x, weight, bias, leaky=True)
    b, t, c = x.shape
    mx.eval(x, weight, bias)
    xn, wn, bn = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, weight, bias))
    out = np.empty((b, t // pool, c), np.float32)
    if lib.instance_norm(_f32(xn), b, t, c, pool, _f32(wn), _f32(bn), EPS, 1, _f32(out),
                         _threads()):
        raise ValueError(f"instance norm: too few frames ({t}) for pool {pool}")
    return mx.array(out)


def pool_norm_leaky_relu(x, weight, bias, take_abs: bool = False):
    """``leaky_relu(InstanceNorm1d(MaxPool1d(3)(|x| or x)))`` on channels-last (B, T, C)."""
    if take_abs:  # one fused pass over three strided views
        return norm_leaky_relu(_abs_max3(*_pool3_views(x)), weight, bias)
    return norm_leaky_relu(x, weight, bias, pool=POOL)


class InstanceNorm(nn.Module):
    """``InstanceNorm1d(C, affine=True)`` (no running stats) on channels-last (B, T, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x):
        return instance_norm(x, self.weight, self.bias)


class SincConv(nn.Module):
    """asteroid ``Encoder(ParamSincFB(80, 251, stride))``: the 80 filters are computed once at
    conversion from ``low_hz_``/``band_hz_``/``n_``/``window_`` (they only depend on those).

    On the CPU the conv runs in ``sincnet.cpp`` (folded windows, |.| and the max-pool taken on
    its accumulators) when the filters are [symmetric; antisymmetric] exactly, as asteroid builds
    them; else, on the GPU, or without the native kernels, ``mx.conv1d``."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.weight = mx.zeros((SINC_FILTERS, SINC_KERNEL, 1))

    def folded(self):
        """(ws, wa, ns, half, kp) for ``sincnet.cpp``, or None where the filters are not [ns
        symmetric; antisymmetric] exactly; built once per weight array."""
        return mlx_layers.derived(self, "folded", [self.weight], self._fold)

    def _fold(self):
        w = np.asarray(self.weight, dtype=np.float32)[:, :, 0]  # (F, K)
        k = w.shape[1]
        sym = np.all(w == w[:, ::-1], axis=1)
        anti = np.all(w == -w[:, ::-1], axis=1)
        ns = int(np.argmin(sym)) if not sym.all() else len(sym)
        res = None
        if k % 2 and sym[:ns].all() and anti[ns:].all():
            half = k // 2
            kp = -(-(half + 1) // 8) * 8

            def pack(rows, taps):  # (F, taps) -> (kp, F padded to 8), zeros elsewhere
                out = np.zeros((kp, -(-len(rows) // 8) * 8), np.float32)
                out[:taps, :len(rows)] = rows[:, :taps].T
                return out
            res = (pack(w[:ns], half + 1), pack(w[ns:], half), ns, half, kp)
        return res

    def __call__(self, x, pool: bool = False):
        """x (B, N, 1) -> (B, frames, 80), no bias, no padding; ``pool``: ``max_pool3(|.|)`` of
        that, (B, frames // 3, 80)."""
        fold = None if mlx_layers.on_gpu() or x.dtype != mx.float32 else self.folded()
        lib = _native("sincnet") if fold is not None else None
        if lib is None:
            y = mx.conv1d(x, self.weight, stride=self.stride)
            return _abs_max3(*_pool3_views(y)) if pool else y
        ws, wa, ns, half, kp = fold
        b, n, _ = x.shape
        frames = (n - 2 * half - 1) // self.stride + 1
        if frames < 1:
            raise ValueError(f"SincNet needs at least {2 * half + 1} samples, got {n}")
        mx.eval(x)
        xn = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(b, n))
        out = np.empty((b, frames // POOL if pool else frames, self.weight.shape[0]), np.float32)
        if lib.sinc_conv(_f32(xn), n, b, _f32(ws), ns, _f32(wa), self.weight.shape[0] - ns, half,
                         self.stride, kp, int(pool), _f32(out), _threads()):
            raise ValueError(f"sinc conv: bad sizes (n={n}, batch={b})")
        return mx.array(out)


class SincNet(nn.Module):
    def __init__(self, stride: int = 10):
        super().__init__()
        self.wav_norm1d = InstanceNorm(1)
        self.conv1d = [SincConv(stride), Conv1d(SINC_FILTERS, CONV_CHANNELS, CONV_KERNEL),
                       Conv1d(CONV_CHANNELS, CONV_CHANNELS, CONV_KERNEL)]  # shifted GEMMs
        self.norm1d = [InstanceNorm(SINC_FILTERS), InstanceNorm(CONV_CHANNELS),
                       InstanceNorm(CONV_CHANNELS)]

    def stages(self, waveforms, every: bool = True):
        """Yield (name, activation) after each stage; activations are channels-last.
        ``every=False`` skips the "sinc_conv" stage: the conv then takes |.| and the pool
        itself (one pass, same numbers)."""
        b, _, n = waveforms.shape
        x = self.wav_norm1d(waveforms.reshape(b, n, 1))  # (B, N, 1): one channel, no transpose
        yield "wav_norm", x.reshape(b, 1, n)
        for c, (conv, norm) in enumerate(zip(self.conv1d, self.norm1d)):
            if c == 0 and not every:
                x = norm_leaky_relu(conv(x, pool=True), norm.weight, norm.bias)
            else:
                x = conv(x)
                if c == 0:
                    yield "sinc_conv", x
                x = pool_norm_leaky_relu(x, norm.weight, norm.bias, take_abs=c == 0)
            yield f"sincnet_block{c}", x

    def __call__(self, waveforms):
        for _, x in self.stages(waveforms, every=False):
            pass
        return x


class BiLSTM(nn.Module):
    """``nn.LSTM(batch_first=True, bidirectional=True)`` with torch's parameter names and shapes.

    Gates i, f, g, o as torch. ``bias_l{k}`` is torch's ``bias_ih + bias_hh``, and the g-gate rows
    of ``weight_ih``/``weight_hh``/``bias`` are pre-scaled by 2 at conversion, so that one sigmoid
    over all gate rows gives the four gates (tanh(x) = 2 sigmoid(2x) - 1).

    In and out ``(B, T, C)``. The C++ layer (``layer_native``) runs time-major ``(T, B, C)``;
    the MLX steps (``layer``) feature-major, time, batch-minor ``(C, T, B)``: per layer, the input
    projection of
    every step of both directions is one batched matmul (the backward direction reads the
    time-reversed input), laid out gate-major ``(4 gates, 2 directions, H, T, B)``. Each step is
    then one batched ``addmm`` for both directions and one compiled call for the elementwise rest
    over contiguous ``(2, H, B)`` gate blocks (fused loops on strided slices would be scalar):
    MLX on CPU costs ~5-10 us per primitive and ~30 us per compiled call whatever the batch, so
    the step count, not the FLOPs, sets the small-batch time.
    """

    # "native": the whole layer's time loop in C++ (``bilstm.cpp``, built at run time by
    # ports.common.native), both directions on two threads; the CPU default for float32 where a
    # compiler is present. The pure-MLX kinds stay as its tested fallback:
    # "jit": the step under mx.compile with ``mlx_layers.activations(jit=True)`` (on the CPU the
    # vectorised sigmoid_jit/tanh_jit, as accurate as libm's; MLX's own on the GPU); "fused":
    # under mx.compile with MLX's own mx.sigmoid/mx.tanh (scalar on the CPU, same numbers as
    # eager, fewest kernels); "eager": op by op. None: "jit" on the GPU; on the CPU with its JIT
    # compiler "jit" from ``jit_min_batch`` up, "fused" below (there the ~11 kernels of the
    # vectorised step cost more than its arithmetic saves), "eager" without a compiler.
    step_kind: str | None = None
    jit_min_batch: int = 4
    # async_eval every so many steps: MLX starts computing while Python still builds the graph.
    async_every: int = 32

    def __init__(self, input_size: int, hidden: int, num_layers: int, bidirectional: bool = True):
        super().__init__()
        if not bidirectional:
            raise NotImplementedError("segmentation-3.0 uses a bidirectional LSTM")
        self.hidden = hidden
        self.num_layers = num_layers
        for k in range(num_layers):
            n_in = input_size if k == 0 else 2 * hidden
            for sfx in ("", "_reverse"):
                setattr(self, f"weight_ih_l{k}{sfx}", mx.zeros((4 * hidden, n_in)))
                setattr(self, f"weight_hh_l{k}{sfx}", mx.zeros((4 * hidden, hidden)))
                setattr(self, f"bias_l{k}{sfx}", mx.zeros((4 * hidden,)))

    def _kind(self, batch: int) -> str:
        if self.step_kind:
            return self.step_kind
        if mlx_layers.on_gpu():
            return "jit"
        if native_lstm() is not None:
            return "native"
        if not mlx_layers.cpu_jit_available():
            return "eager"
        return "jit" if batch >= self.jit_min_batch else "fused"

    def _gate_major(self, name: str, k: int):
        """(4H, ...) forward and reverse parameters -> (4 gates, 2 directions, H, ...)."""
        p = self.parameters()
        w = mx.stack([p[f"{name}_l{k}"], p[f"{name}_l{k}_reverse"]])  # (2, 4H, ...)
        w = w.reshape(2, 4, self.hidden, *w.shape[2:])
        return mx.swapaxes(w, 0, 1)

    def _use_native(self, x) -> bool:
        b, t_len, _ = x.shape
        return (self._kind(b) == "native" and x.dtype == mx.float32 and self.hidden % 16 == 0
                and t_len > 0 and b > 0)

    def stages(self, x):
        """(B, T, In) -> yields each layer's (B, T, 2H) = [forward; backward] features."""
        if self._use_native(x):
            h = x.transpose(1, 0, 2)  # time-major (T, B, C): the C++ layers chain in it
            for k in range(self.num_layers):
                h = self.layer_native(h, k)
                yield h.transpose(1, 0, 2)
        else:
            h = x.transpose(2, 1, 0)  # (C, T, B)
            for k in range(self.num_layers):
                h = self.layer(h, k)
                yield h.transpose(2, 1, 0)

    def __call__(self, x):
        """(B, T, In) -> (B, T, 2H)."""
        for h in self.stages(x):
            pass
        return h

    def layer_native(self, x, k: int):
        """One bidirectional layer in C++, time-major: (T, B, In) -> (T, B, 2H). Both
        directions' input projections are one GEMM, in forward time."""
        t_len, b, n_in = x.shape
        w_ih, arrays = self._native_weights(k)
        xp = x.reshape(t_len * b, n_in) @ w_ih.T  # (T B, 8H)
        return _native_layer(xp.reshape(t_len, b, -1), arrays)

    def _native_weights(self, k: int):
        """Layer k's arrays for the C++ layer, built once per parameter array: [W_ih;
        W_ih_reverse] (8H, In) for the input GEMM, and (numpy) the biases and weight_hh^T of both
        directions."""
        p = self.parameters()
        names = [f"{n}_l{k}{sfx}" for n in ("weight_ih", "bias", "weight_hh")
                 for sfx in ("", "_reverse")]

        def build():
            w_ih = mx.concatenate([p[names[0]], p[names[1]]])
            mx.eval(w_ih)
            return w_ih, ([np.ascontiguousarray(p[n], dtype=np.float32) for n in names[2:4]]
                          + [np.ascontiguousarray(np.asarray(p[n], np.float32).T)
                             for n in names[4:]])
        return mlx_layers.derived(self, f"native_l{k}", [p[n] for n in names], build)

    def layer(self, x, k: int):
        """One bidirectional layer with an MLX step: (In, T, B) -> (2H, T, B) = [forward;
        backward]."""
        n_in, t_len, b = x.shape
        n = self.hidden
        kind = self._kind(b)
        if kind == "native":  # a shape or dtype the C++ layer does not take
            kind = "jit"
        xs = mx.stack([x, x[:, ::-1]]).reshape(2, n_in, t_len * b)  # backward: reversed time
        w_ih = self._gate_major("weight_ih", k)  # (4, 2, H, In)
        bias = self._gate_major("bias", k)[..., None]  # (4, 2, H, 1)
        xp = mx.addmm(bias, w_ih, xs).reshape(4, 2, n, t_len, b)
        # one Split primitive hands out every step's (4, 2, H, 1, B) block
        xp_steps = mx.split(xp, t_len, axis=3)
        w_hh = self._gate_major("weight_hh", k)  # (4, 2, H, H)
        step = step_fn(kind)
        h = c = mx.zeros((1, 2, n, b), dtype=x.dtype)
        outs = []
        for i in range(t_len):
            h, c = step(xp_steps[i], w_hh, h, c)
            outs.append(h)
            if self.async_every and i % self.async_every == self.async_every - 1:
                mx.async_eval(h)
        hs = mx.concatenate(outs, axis=0)  # (T, 2, H, B); the backward half in reversed time
        return mx.concatenate([hs[:, 0].transpose(1, 0, 2), hs[::-1, 1].transpose(1, 0, 2)],
                              axis=0)


def _step_math(sigmoid, tanh, xp_t, w_hh, h, c):
    """One step of both directions: xp_t (4, 2, H, 1, B) input projections (pre-scaled g rows),
    w_hh (4, 2, H, H), h and c (1, 2, H, B) -> new (h, c)."""
    s = sigmoid(mx.addmm(mx.squeeze(xp_t, 3), w_hh, h))  # (4, 2, H, B), contiguous
    i, f, g2, o = mx.split(s, 4, axis=0)  # one primitive, contiguous (1, 2, H, B) blocks
    c = f * c + i * (2.0 * g2 - 1.0)
    return o * tanh(c), c


_I, _L = ctypes.c_int, ctypes.c_long
_F32 = native.F32
# name -> (interface version, {function: (argtypes, restype)}) of the C++ kernels next to this file
_NATIVE = {
    "bilstm": (3, {"bilstm_layer": ([_F32] * 6 + [_I] * 4, _I),
                   "bilstm_activations": ([_F32, _F32, _F32, _L], None)}),
    "sincnet": (2, {"sinc_conv": ([_F32, _L, _I, _F32, _I, _F32, _I, _I, _I, _I, _I, _F32, _I], _I),
                    "instance_norm": ([_F32, _I, _L, _I, _I, _F32, _F32, ctypes.c_float, _I, _F32,
                                       _I], _I)}),
}


def _native(name: str):
    """The C++ kernels of ``name``.cpp, or None: GPU, not Linux, no compiler,
    AUDIO_PORTS_NATIVE=0."""
    abi, signatures = _NATIVE[name]
    return mlx_layers.cpu_kernels(str(Path(__file__).with_name(f"{name}.cpp")), abi, signatures)


def native_lstm():
    """The C++ BiLSTM layer, or None (see ``_native``)."""
    return _native("bilstm")


_f32, _threads = native.f32, native.threads


def _native_layer(xp, arrays):
    """xp (T, B, 8H) = x [W_ih; W_ih_reverse]^T without the bias; ``arrays``: the biases (4H)
    and weight_hh^T (H, 4H) of both directions -> (T, B, 2H), by ``bilstm.cpp`` (ctypes releases
    the GIL for the call)."""
    t_len, b, _ = xp.shape
    n = arrays[2].shape[0]
    lib = native_lstm()
    if lib is None:
        raise RuntimeError("the native LSTM needs Linux and g++ on PATH (and AUDIO_PORTS_NATIVE "
                           "not 0); use BiLSTM.step_kind 'jit', 'fused' or 'eager'")
    mx.eval(xp)
    xp = np.ascontiguousarray(xp, dtype=np.float32)
    out = np.empty((t_len, b, 2 * n), dtype=np.float32)
    if lib.bilstm_layer(*(_f32(a) for a in (xp, *arrays, out)), n, t_len, b, _threads()):
        raise ValueError(f"native LSTM: hidden {n} is not a multiple of 16, or T={t_len}, B={b}")
    return mx.array(out)


STEP_KINDS = ("native", "jit", "fused", "eager")
_step_cache: dict = {}


def step_fn(kind: str):
    """The LSTM step for ``kind``, built on first use."""
    key = (kind, mlx_layers.on_gpu())
    if key not in _step_cache:
        if kind == "jit":
            sigmoid, tanh = mlx_layers.activations(jit=True)
            fn = mx.compile(lambda xp_t, w_hh, h, c: _step_math(sigmoid, tanh, xp_t, w_hh, h, c))
        elif kind == "fused":
            fn = mx.compile(lambda xp_t, w_hh, h, c: _step_math(mx.sigmoid, mx.tanh, xp_t, w_hh,
                                                                h, c))
        elif kind == "eager":
            def fn(xp_t, w_hh, h, c):
                return _step_math(mx.sigmoid, mx.tanh, xp_t, w_hh, h, c)
        else:
            raise ValueError(f"unknown LSTM step kind {kind!r} (expected one of {STEP_KINDS})")
        _step_cache[key] = fn
    return _step_cache[key]


class PyanNet(nn.Module):
    def __init__(self, config: SegmentationConfig | None = None):
        super().__init__()
        cfg = config or SegmentationConfig()
        self.config = cfg
        self.sincnet = SincNet(cfg.sinc_stride)
        self.lstm = BiLSTM(CONV_CHANNELS, cfg.lstm_hidden, cfg.lstm_layers, cfg.lstm_bidirectional)
        dims = [cfg.lstm_out] + [cfg.linear_hidden] * cfg.linear_layers
        self.linear = [Linear(a, b) for a, b in zip(dims[:-1], dims[1:])]
        self.classifier = Linear(dims[-1], cfg.dimension)

    def stages(self, waveforms):
        """Yield (name, activation) for every stage, for stage-by-stage parity."""
        if waveforms.ndim == 2:
            waveforms = waveforms[:, None]
        for name, x in self.sincnet.stages(waveforms):
            yield name, x
        for k, x in enumerate(self.lstm.stages(x)):
            yield f"lstm{k}", x
        for k, lin in enumerate(self.linear):
            x = leaky_relu(lin(x))
            yield f"linear{k}", x
        x = self.classifier(x)
        yield "classifier", x
        yield "logprobs", x - mx.logsumexp(x, axis=-1, keepdims=True)

    def __call__(self, waveforms, sincnet_batch: int = SINCNET_BATCH):
        """(B, 1, N) float32 -> (B, frames, 7) powerset log-probabilities.

        SincNet runs (and is evaluated) ``sincnet_batch`` chunks at a time: its first conv
        unfolds 251 taps per output frame (~16 MB per chunk), which would otherwise dominate
        peak memory at batch 32. The LSTM and head run on the whole batch.
        """
        if waveforms.ndim == 2:
            waveforms = waveforms[:, None]
        b = waveforms.shape[0]
        if b <= sincnet_batch:
            x = self.sincnet(waveforms)
        else:
            parts = []
            for i in range(0, b, sincnet_batch):
                part = self.sincnet(waveforms[i:i + sincnet_batch])
                mx.eval(part)
                parts.append(part)
            x = mx.concatenate(parts, axis=0)
        x = self.lstm(x)
        for lin in self.linear:
            x = leaky_relu(lin(x))
        x = self.classifier(x)
        return x - mx.logsumexp(x, axis=-1, keepdims=True)
