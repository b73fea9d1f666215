"""Shared MLX layers and fast elementwise ops (channels-last, torch parameter layouts).

MLX on x86 CPUs has no SIMD: ``mx.sigmoid``/``mx.tanh``/``mx.exp`` cost ~20 ns per element,
single-threaded. Inside ``mx.compile`` the CPU backend emits C++ loops built with the system
``g++ -O3``, which vectorises plain arithmetic; ``sigmoid_jit``/``tanh_jit`` are written so that
it does (~3 ns per element, ~1-2 ulp). The Cephes-formula ``exp_arith``/``sigmoid_arith``/
``tanh_arith`` are as accurate but their floor/where/bit-cast keep their loops scalar. Outside
``mx.compile``, or without a compiler, all of them are ~25 separate ops: use
``activations(jit)`` to pick the right pair.

Layers keep torch's parameter shapes except where MLX's own convention differs (conv weights are
``(out, k, in)``), so converters stay key maps.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys

from . import blas, native
from .blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

# Cephes expf: Cody-Waite reduction by ln 2 and a degree-5 polynomial, ~1 ulp.
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
          1.6666665459e-1, 5.0000001201e-1)
EXP_LO, EXP_HI = -87.33654, 88.72283  # exp underflows / overflows float32 beyond
_LOG2E = 1.4426950408889634
_ROUND = 12582912.0  # 1.5 * 2**23: (y + _ROUND) - _ROUND = y rounded to an integer, |y| < 2**22
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # n * _LN2_HI is exact for n < 2**15
# Cephes tanhf below |x| = 0.625 (odd polynomial: full relative precision near 0).
_TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
           -3.33332819422e-1)


@functools.lru_cache(maxsize=None)
def cpu_jit_available() -> bool:
    """Whether ``mx.compile`` can fuse on the CPU: MLX runs ``g++`` from PATH (macOS: clang)."""
    return sys.platform == "darwin" or shutil.which("g++") is not None


def on_gpu() -> bool:
    return mx.default_device() == mx.gpu


_streams: list = []


def cpu_streams(n: int = 2):
    """``n`` MLX CPU streams for independent parts of one graph, or None: on the GPU, with one
    core, or with ``AUDIO_PORTS_MLX_STREAMS=0``. Each CPU stream has its own thread, and MLX's
    CPU ops outside BLAS are single-threaded, so two halves on two streams use two cores."""
    if (on_gpu() or os.environ.get("AUDIO_PORTS_MLX_STREAMS", "1").strip() == "0"
            or native.cores() < 2):
        return None
    while len(_streams) < n:
        _streams.append(mx.new_stream(mx.cpu))
    return _streams[:n]


@contextlib.contextmanager
def concurrent(n: int = 2):
    """Yields :func:`cpu_streams` (or None), with the BLAS at one thread inside: evaluate the
    streams' work inside the block (one core per stream; a GEMM that also took both cores would
    fight the other stream)."""
    streams = cpu_streams(n)
    if streams is None:
        yield None
        return
    with blas.threads(1):
        yield streams


def on_stream(streams, i: int):
    """``mx.stream(streams[i])``, or no change where ``streams`` is None."""
    return mx.stream(streams[i]) if streams else contextlib.nullcontext()


def exp_arith(x):
    """``exp`` of float32 from arithmetic, a floor and a bit shift (~1 ulp, like libm's; max
    relative error 8e-8). Other dtypes: ``mx.exp`` (the bit trick is float32's)."""
    if x.dtype != mx.float32:
        return mx.exp(x)
    xc = mx.clip(x, EXP_LO, EXP_HI)
    n = mx.floor(xc * _LOG2E + 0.5)
    r = xc - n * _LN2_HI  # ln 2 split in two, so n * ln 2 is exact
    r = r - n * _LN2_LO
    p = _EXP_P[0]
    for c in _EXP_P[1:]:
        p = p * r + c
    y = p * (r * r) + r + 1.0
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    return mx.where(x < EXP_LO, 0.0, y * two_n)


def sigmoid_arith(x):
    """``1 / (1 + exp(-x))`` with :func:`exp_arith`: relative precision also where the gate is
    near 0. (``(1 + tanh(x/2)) / 2`` loses it there: 1.8e-7 absolute on values of 1e-5, which real
    segmentation-3.0 LSTMs amplified past the original's own fp32 error.)"""
    if x.dtype != mx.float32:
        return mx.sigmoid(x)
    return 1.0 / (1.0 + exp_arith(-x))


def tanh_arith(x):
    """``tanh`` as Cephes computes it: an odd polynomial below 0.625, else
    ``1 - 2 / (exp(2|x|) + 1)`` with the sign of ``x``; ~1e-7 absolute and relative, like libm."""
    if x.dtype != mx.float32:
        return mx.tanh(x)
    a = mx.abs(x)
    z = x * x
    p = _TANH_P[0]
    for c in _TANH_P[1:]:
        p = p * z + c
    small = p * z * x + x
    big = 1.0 - 2.0 / (exp_arith(2.0 * a) + 1.0)
    return mx.where(a < 0.625, small, mx.where(x < 0, -big, big))


# Activations that g++ vectorises inside mx.compile on the CPU (the JIT builds with plain
# ``g++ -O3``: SSE2, no -ffast-math). What the generated C++ may contain:
# - no floor/round (libm calls without SSE4.1) and no bit-cast (``view`` is not fusable):
#   rounding by adding and subtracting 1.5 * 2**23, exact in float32; 2**-n as a product of one
#   exact factor per bit of n, from the int32 bits of that same sum (int/float arithmetic only:
#   selects on bool masks also vectorise but cost ~30 % more there);
# - no ``where``/``minimum`` whose result feeds float arithmetic: g++ folds the arithmetic into
#   the branches (x * 1 -> x, constant arms) and, as float ops may trap, gives up vectorising;
#   selects between constants are fine if no arm is 1, a ``minimum`` whose result is stored is
#   fine (hence the clamp as a kernel of its own);
# - MLX fuses at most 11 levels deep (a constant at the 11th becomes a strided input) and 24
#   inputs, and splits at nodes shared between kernels: ``_barrier`` cuts the graph into five
#   kernels (clamp, 2**-n, reduced argument, its expm1, result) with one output each;
# - selects by sign as arithmetic with constant-select factors: w + s * y, (w, s) = (0, 1) or
#   (1, -1), exact.
_POW2_BITS = [1 << j for j in range(7)]  # n <= 126


def _pow2_factor(b, bit: int):
    """2**-bit if b == bit else 1, for b in {0, bit} (float), exactly: 1 + b (2**-bit - 1) / bit
    while 2**-bit - 1 is exact in float32, else (1 - b') + b' 2**-bit with b' = b / bit."""
    p = 2.0 ** -bit
    if bit <= 16:
        return b * ((p - 1.0) / bit) + 1.0
    b = b * (1.0 / bit)
    return (1.0 - b) + b * p


def _barrier(a):
    """A fusion boundary inside ``mx.compile`` (two view reshapes, no copy)."""
    return a.reshape(-1).reshape(a.shape)


def _exp_neg_parts(x, scale: float, zero_at_clamp: bool = False):
    """exp(-a), a = min(scale |x|, -EXP_LO), as ``P * (1 + q)`` with P = 2**-n exact and
    q = expm1(-r), r = a - n ln 2 in [-0.35, 0.35] (Cephes' polynomial): returns (P, q).
    ``zero_at_clamp``: P = 0 where n = 126 (a > 86.99, exp(-a) < 2.1e-38), by int arithmetic
    (a bool-to-float factor made the kernel scalar, 2x slower)."""
    a = mx.abs(x) if scale == 1.0 else mx.abs(x) * scale
    a = _barrier(mx.minimum(a, -EXP_LO))
    # round(a log2 e) + 1.5 * 2**23: n sits in the low bits of its int32 value (n <= 126)
    k = mx.add(_ROUND, mx.multiply(_LOG2E, a)).astype(mx.int32)  # operand order: not CSE'd below
    f = [_pow2_factor((k & bit).astype(mx.float32), bit) for bit in _POW2_BITS]
    pw = ((f[0] * f[1]) * (f[2] * f[3])) * ((f[4] * f[5]) * f[6])
    if zero_at_clamp:  # n = k & 127 <= 126; (125 - n) >> 31 is -1 for n = 126, else 0
        pw = pw * (mx.right_shift(125 - (k & 127), 31) + 1).astype(mx.float32)
    pw = _barrier(pw)
    n = (a * _LOG2E + _ROUND) - _ROUND
    u = _barrier((n * _LN2_HI - a) + n * _LN2_LO)  # -r
    c = _EXP_P
    u2 = u * u
    poly = ((c[4] * u + c[5]) + u2 * (c[2] * u + c[3])) + (u2 * u2) * (c[0] * u + c[1])
    return pw, _barrier(u + u2 * poly)


def sigmoid_jit(x):
    """``sigmoid`` for ``mx.compile`` on the CPU, vectorised: y = e / (1 + e), e = exp(-|x|),
    and 1 - y for x >= 0 (MLX's formula: one rounding last near 1, where an LSTM's forget gate
    sits and its errors accumulate); max error 2.3 float32 ulps, mean 0.23 (``mx.sigmoid``: 59
    and 2.6, its exp loses precision with |x|). Below x = -87.3 it gives 1.2e-38, not ~0."""
    if x.dtype != mx.float32:
        return mx.sigmoid(x)
    pw, q = _exp_neg_parts(x, 1.0)
    e = pw * q + pw
    neg = x < 0
    return mx.where(neg, 0.0, 1.0) + mx.where(neg, 1.0, -1.0) * (e / (1.0 + e))


def tanh_jit(x):
    """``tanh`` for ``mx.compile`` on the CPU, vectorised, with the sign of x: -m / (2 + m),
    m = expm1(-2|x|), below |x| = 0.55 (relative precision near 0), else 1 - 2e / (1 + e),
    e = exp(-2|x|) (one rounding last near 1); max error 2.2 float32 ulps, mean 0.12
    (``mx.tanh``: 2.1 and 0.12)."""
    if x.dtype != mx.float32:
        return mx.tanh(x)
    pw, q = _exp_neg_parts(x, 2.0)
    neg = x < 0
    m = pw * q + (pw - 1.0)
    small = (m * mx.where(neg, 1.0, -1.0)) / (2.0 + m)
    e = pw * q + pw
    big = mx.where(neg, -1.0, 1.0) - mx.where(neg, -2.0, 2.0) * (e / (1.0 + e))
    is_small = mx.abs(x) < 0.55
    return mx.where(is_small, 1.0, 0.0) * small + mx.where(is_small, 0.0, 1.0) * big


def exp_nonpos_jit(x):
    """``exp`` of float32 x <= 0 (a softmax's shifted scores) for ``mx.compile`` on the CPU,
    vectorised: ``_exp_neg_parts``, ~1 ulp; 0 below x = -86.99 (exp < 2.1e-38; torch: denormals
    to -103.9, then 0), so keys masked by a -1e10 bias weigh exactly 0. Other dtypes: ``mx.exp``."""
    if x.dtype != mx.float32:
        return mx.exp(x)
    pw, q = _exp_neg_parts(x, 1.0, zero_at_clamp=True)
    return pw * q + pw


def activations(jit: bool | None = None):
    """``(sigmoid, tanh)`` for code that runs inside ``mx.compile`` when ``jit`` is true.

    GPU: MLX's own kernels (fast there). CPU with a JIT compiler: ``sigmoid_jit``/``tanh_jit``.
    CPU without one: ``mx.sigmoid``/``mx.tanh`` (one op each is better than ~25 unfused ones).
    """
    if jit is None:
        jit = cpu_jit_available()
    if on_gpu() or not jit:
        return mx.sigmoid, mx.tanh
    return sigmoid_jit, tanh_jit


def leaky_relu(x, slope: float = 0.01):
    """``F.leaky_relu`` (default slope 0.01) as one max."""
    return mx.maximum(x, slope * x)


class Linear(nn.Module):
    """``torch.nn.Linear``: weight (out, in), bias (out,); one ``addmm``."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.weight = mx.zeros((n_out, n_in))
        if bias:
            self.bias = mx.zeros((n_out,))

    def __call__(self, x):
        if "bias" in self:
            return mx.addmm(self.bias, x, self.weight.T)
        return x @ self.weight.T


def _shifted_gemms(x, taps, bias, dilation: int):
    """sum_j x[t + j * dilation] @ taps[j] (+ bias) for channels-last (B, T, Cin) and (Cin, N)
    tap matrices: one accumulating GEMM per tap over the batch flattened into one sequence (rows
    that straddle two batch items are computed and dropped) -> (B, T - span, N)."""
    b, t, cin = x.shape
    span = dilation * (len(taps) - 1)
    t_out = t - span
    flat = x.reshape(b * t, cin)
    n = b * t - span
    y = None
    for j, wj in enumerate(taps):
        xj = flat[j * dilation:j * dilation + n]
        if y is None:
            y = mx.addmm(bias, xj, wj) if bias is not None else xj @ wj
        else:
            y = mx.addmm(y, xj, wj)
    if b == 1:  # no straddling rows: skip the pad copy
        return y.reshape(1, t_out, -1)
    return mx.pad(y, [(0, span), (0, 0)]).reshape(b, t, -1)[:, :t_out]


def conv1d_shifted(x, weight, bias=None, dilation: int = 1):
    """Stride-1, unpadded ``conv1d`` of channels-last (B, T, Cin) by (Cout, K, Cin) as K
    accumulating GEMMs (``_shifted_gemms``): no im2col copy (MLX's conv unfolds K * Cin columns
    per frame) and no (T, K * Cout) product to shift-add (3x faster than that on HiFT's k=11
    dilated convs). Same sums as the conv, in K partial sums of Cin terms."""
    k = weight.shape[1]
    span = dilation * (k - 1)
    if x.shape[1] - span < 1:
        raise ValueError(f"conv1d input of {x.shape[1]} frames is shorter than its "
                         f"{span + 1}-frame kernel")
    return _shifted_gemms(x, [weight[:, j].T for j in range(k)], bias, dilation)


def conv1d(x, weight, bias=None, stride: int = 1, padding: int = 0, dilation: int = 1,
           groups: int = 1):
    """torch ``conv1d`` of channels-last (B, T, Cin) by (Cout, k, Cin // groups), zero padding
    both sides. Stride 1: shifted GEMMs (``conv1d_shifted``). Strided: im2col of the strided rows
    + one matmul (MLX's conv runs a naive loop for those). Groups: ``mx.conv1d``."""
    if groups != 1:
        y = mx.conv1d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
        return y + bias if bias is not None else y
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    if stride == 1:
        return conv1d_shifted(x, weight, bias, dilation)
    cout, k, cin = weight.shape
    t_out = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    if t_out < 1:
        raise ValueError(f"conv1d input of {x.shape[1]} frames is shorter than its "
                         f"{dilation * (k - 1) + 1}-frame kernel")
    span = stride * (t_out - 1) + 1
    if k == 1:
        y = x[:, :span:stride] @ weight[:, 0].T
    else:
        cols = mx.concatenate([x[:, i * dilation:i * dilation + span:stride] for i in range(k)],
                              axis=-1)
        y = cols @ weight.reshape(cout, k * cin).T
    return y + bias if bias is not None else y


def transpose_taps(weight, stride: int):
    """A (Cout, k, Cin) conv-transpose weight as m = ceil(k / stride) contiguous (Cin, stride * Cout)
    tap matrices, last tap group first: output block t (stride frames) = sum_j x[t - m + 1 + j] @
    taps[j]. (Strided slices of the torch layout were copied by MLX on every call.)"""
    cout, k, cin = weight.shape
    u = stride
    m = -(-k // u)
    if m * u > k:
        weight = mx.pad(weight, [(0, 0), (0, m * u - k), (0, 0)])
    taps = mx.transpose(weight.reshape(cout, m, u, cin)[:, ::-1], (1, 3, 2, 0))  # (m, in, u, out)
    return mx.contiguous(taps.reshape(m, cin, u * cout))


def conv_transpose1d(x, weight, stride: int, padding: int = 0, bias=None, *, taps=None):
    """torch ``conv_transpose1d`` of (B, T, Cin) by (Cout, k, Cin): a stride-1 conv of the input
    padded by m - 1 = ceil(k / stride) - 1 frames with m taps of stride * Cout outputs each (one
    accumulating GEMM per tap, ``transpose_taps``; ``taps`` passes them pre-arranged), whose
    output blocks are the stride frames of the result. MLX's own runs a naive loop for strides > 1."""
    cout, k, cin = weight.shape
    u = stride
    taps = transpose_taps(weight, u) if taps is None else taps
    m = taps.shape[0]
    B, T, _ = x.shape
    xp = mx.pad(x, [(0, 0), (m - 1, m - 1), (0, 0)])
    y = _shifted_gemms(xp, [taps[j] for j in range(m)], None if bias is None else mx.tile(bias, u), 1)
    y = y.reshape(B, (T + m - 1) * u, cout)
    n = (T - 1) * u - 2 * padding + k
    return y[:, padding:padding + n]


class Conv1d(nn.Module):
    """``torch.nn.Conv1d`` (same argument order and defaults) on channels-last (B, T, C); weight
    (out, k, in // groups) as MLX. See ``conv1d``."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = mx.zeros((cout, k, cin // groups))
        if bias:
            self.bias = mx.zeros((cout,))

    def __call__(self, x):
        return conv1d(x, self.weight, self.bias if "bias" in self else None, self.stride,
                      self.padding, self.dilation, self.groups)


def cpu_kernels(source: str, abi: int, signatures: dict):
    """``native.kernels`` for an MLX model: None on the GPU (the MLX path runs there)."""
    return None if on_gpu() else native.kernels(source, abi, signatures)


def derived(module, name: str, arrays: list, build):
    """``build()``, kept on ``module`` outside its parameter tree and rebuilt when any of
    ``arrays`` is no longer the same object (a load or update replaces parameter arrays): for
    forms of the weights arranged once, such as packed panels for the C++ kernels."""
    key = f"_derived_{name}"
    cached = module.__dict__.get(key)
    if (cached is None or len(cached[0]) != len(arrays)
            or any(a is not b for a, b in zip(cached[0], arrays))):
        cached = (list(arrays), build())
        object.__setattr__(module, key, cached)
    return cached[1]


class ConvTranspose1d(nn.Module):
    """``torch.nn.ConvTranspose1d`` on channels-last (B, T, C); weight (out, k, in) as MLX's. The
    tap matrices (``transpose_taps``) are arranged once per weight array (re-done when a load
    replaces it); not for use under ``mx.compile``, where the weight is a placeholder."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self.stride, self.padding = stride, padding

    def _taps(self):
        return derived(self, "taps", [self.weight], lambda: transpose_taps(self.weight, self.stride))

    def __call__(self, x):
        return conv_transpose1d(x, self.weight, self.stride, self.padding,
                                self.bias if "bias" in self else None, taps=self._taps())


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm(dims, eps)`` over the last axis (``mx.fast.layer_norm``)."""

    def __init__(self, dims: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.weight, self.bias, self.eps)


class ParameterFree(nn.Module):
    """Stands for a parameter-free torch module (activation, transpose, dropout) in a list, so that
    list indices equal the original ``nn.Sequential`` indices in the state-dict keys."""


def pad_time(x, left: int, right: int):
    """Zero padding of the time axis of channels-last (B, T, C)."""
    return mx.pad(x, [(0, 0), (left, right), (0, 0)])


__all__ = ["cpu_jit_available", "on_gpu", "cpu_streams", "concurrent", "on_stream", "cpu_kernels", "derived", "exp_arith", "tanh_arith", "sigmoid_arith", "tanh_jit",
           "sigmoid_jit", "exp_nonpos_jit", "activations", "leaky_relu", "Linear", "Conv1d", "ConvTranspose1d",
           "LayerNorm", "ParameterFree", "conv1d", "conv1d_shifted", "conv_transpose1d",
           "transpose_taps", "pad_time"]
