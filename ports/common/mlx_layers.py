"""Shared MLX layers and fast elementwise ops (channels-last, torch parameter layouts).

MLX on x86 CPUs has no SIMD: ``mx.sigmoid``/``mx.tanh``/``mx.exp`` cost ~20 ns per element,
single-threaded. Inside ``mx.compile`` the CPU backend emits a C++ loop built with the system
``g++ -O3``, which auto-vectorises plain arithmetic; so ``tanh``/``sigmoid`` written as a rational
function run at ~3 ns per element there (~3e-7 absolute error, below fp32 parity tolerances).
Outside ``mx.compile``, or without a compiler, they would be ~20 separate ops: use
``activations(jit)`` to pick the right pair.

Layers keep torch's parameter shapes except where MLX's own convention differs (conv weights are
``(out, k, in)``), so converters stay key maps.
"""
from __future__ import annotations

import functools
import shutil
import sys

from .blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

# Eigen's float tanh: odd 13/6 rational approximation on [-7.905, 7.905], where tanh rounds
# to +-1 in float32 (max abs error ~3e-7 against float64 tanh).
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
           5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
           -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
           1.19825839466702e-06)


@functools.lru_cache(maxsize=None)
def cpu_jit_available() -> bool:
    """Whether ``mx.compile`` can fuse on the CPU: MLX runs ``g++`` from PATH (macOS: clang)."""
    return sys.platform == "darwin" or shutil.which("g++") is not None


def on_gpu() -> bool:
    return mx.default_device() == mx.gpu


def tanh_arith(x):
    """``tanh`` from +, *, / and abs only (vectorised when fused by ``mx.compile`` on CPU).

    Finite inputs: ~3.6e-7 absolute error. ``+-inf`` give NaN (the LSTM gates never are).
    """
    # Clamp to +-7.905 without Minimum/Maximum (their NaN branch stops g++ vectorising the
    # loop): r = relu(|x| - A) is exactly 0 inside the range, so x is kept bit for bit there;
    # outside, x / (1 + r / A) = A sign(x) up to rounding. Halves avoid overflow near 3e38.
    e = mx.abs(x) - _TANH_CLAMP
    r = 0.5 * e + 0.5 * mx.abs(e)
    x = x / (1.0 + r * (1.0 / _TANH_CLAMP))
    x2 = x * x
    # Estrin-style grouping keeps the fused graph shallow (MLX splits fusions deeper than 11)
    x4 = x2 * x2
    x8 = x4 * x4
    p = ((_TANH_P[0] + _TANH_P[1] * x2) + (_TANH_P[2] + _TANH_P[3] * x2) * x4
         + ((_TANH_P[4] + _TANH_P[5] * x2) + _TANH_P[6] * x4) * x8)
    q = (_TANH_Q[0] + _TANH_Q[1] * x2) + (_TANH_Q[2] + _TANH_Q[3] * x2) * x4
    return x * p / q


def sigmoid_arith(x):
    """``sigmoid(x) = (1 + tanh(x / 2)) / 2`` with the arithmetic tanh."""
    return 0.5 + 0.5 * tanh_arith(0.5 * x)


def activations(jit: bool | None = None):
    """``(sigmoid, tanh)`` for code that runs inside ``mx.compile`` when ``jit`` is true.

    GPU: MLX's own kernels (fast there). CPU with a JIT compiler: the arithmetic versions. CPU
    without one: ``mx.sigmoid``/``mx.tanh`` (one op each is better than ~20 unfused ones).
    """
    if jit is None:
        jit = cpu_jit_available()
    if on_gpu() or not jit:
        return mx.sigmoid, mx.tanh
    return sigmoid_arith, tanh_arith


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


def conv1d_shifted(x, weight, bias=None, dilation: int = 1):
    """Stride-1, unpadded ``conv1d`` of channels-last (B, T, Cin) by (Cout, K, Cin) as K
    accumulating GEMMs over the batch flattened into one sequence: no im2col copy (MLX's conv
    unfolds K * Cin columns per frame). Rows that straddle two batch items are computed and
    dropped. Same sums as the conv, in K partial sums of Cin terms."""
    b, t, cin = x.shape
    cout, k, _ = weight.shape
    span = dilation * (k - 1)
    t_out = t - span
    if t_out < 1:
        raise ValueError(f"conv1d input of {t} frames is shorter than its {span + 1}-frame kernel")
    flat = x.reshape(b * t, cin)
    n = b * t - span
    y = None
    for j in range(k):
        xj = flat[j * dilation:j * dilation + n]
        wj = weight[:, j].T
        if y is None:
            y = mx.addmm(bias, xj, wj) if bias is not None else xj @ wj
        else:
            y = mx.addmm(y, xj, wj)
    return mx.pad(y, [(0, span), (0, 0)]).reshape(b, t, cout)[:, :t_out]


class Conv1d(nn.Module):
    """``torch.nn.Conv1d`` on channels-last (B, T, C) input; weight (out, k, in) as MLX.

    Stride 1 without groups runs as shifted GEMMs (``conv1d_shifted``, ~1.8x faster than
    ``mx.conv1d`` on CPU for k=5); anything else calls ``mx.conv1d``.
    """

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = mx.zeros((cout, k, cin // groups))
        if bias:
            self.bias = mx.zeros((cout,))

    def __call__(self, x):
        bias = self.bias if "bias" in self else None
        if self.stride == 1 and self.groups == 1:
            if self.padding:
                x = mx.pad(x, [(0, 0), (self.padding, self.padding), (0, 0)])
            return conv1d_shifted(x, self.weight, bias, self.dilation)
        y = mx.conv1d(x, self.weight, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, groups=self.groups)
        return y + bias if bias is not None else y


__all__ = ["cpu_jit_available", "on_gpu", "tanh_arith", "sigmoid_arith", "activations",
           "leaky_relu", "Linear", "Conv1d", "conv1d_shifted"]
