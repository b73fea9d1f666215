"""Layers shared by the S3Gen parts (tokenizer, CAMPPlus, flow, HiFT), channels-last (B, T, C).

MLX's CPU conv runs im2col + BLAS only for undilated, unflipped kernels and a naive loop
otherwise (every dilated conv, every strided conv transpose): here every conv is one matmul
(BLAS) plus a shift-add of its k taps (or an explicit im2col when strided), and the conv transpose
is one matmul + an overlap-add.
"""
from __future__ import annotations

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)


def conv1d(x, weight, stride: int = 1, padding: int = 0, dilation: int = 1):
    """torch conv1d on (B, T, Cin) with weight (Cout, k, Cin), zero padding both sides, no bias.

    Stride 1: one matmul (B, Tp, Cin) @ (Cin, k * Cout) over the padded input, then output t sums
    tap i's block at t + i * dilation (k shifted slices; no im2col copy of k * Cin columns: ~10-20%
    less CPU than im2col on HiFT's shapes). Strided: im2col (strided rows) + one matmul."""
    cout, k, cin = weight.shape
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    t_out = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    if k == 1:
        return (x[:, :stride * (t_out - 1) + 1:stride] if stride > 1 else x) @ weight[:, 0].T
    if stride == 1:
        z = x @ mx.transpose(weight, (2, 1, 0)).reshape(cin, k * cout)
        z = z.reshape(x.shape[0], x.shape[1], k, cout)
        y = z[:, :t_out, 0]
        for i in range(1, k):
            y = y + z[:, i * dilation:i * dilation + t_out, i]
        return y
    span = stride * (t_out - 1) + 1
    cols = mx.concatenate([x[:, i * dilation:i * dilation + span:stride] for i in range(k)], axis=-1)
    return cols @ weight.reshape(cout, k * cin).T


def conv_transpose1d(x, weight, stride: int, padding: int = 0):
    """torch conv_transpose1d on (B, T, Cin) with weight (Cout, k, Cin), no bias: one matmul
    (B, T, Cin) @ (Cin, m * stride * Cout) with m = ceil(k / stride), then output block t collects
    the matmul's block t - i of tap group i (an overlap-add of m shifted copies)."""
    cout, k, cin = weight.shape
    u = stride
    B, T, _ = x.shape
    m = -(-k // u)
    w = mx.transpose(weight, (2, 1, 0))  # (in, k, out)
    if m * u > k:
        w = mx.pad(w, [(0, 0), (0, m * u - k), (0, 0)])
    y = (x @ w.reshape(cin, m * u * cout)).reshape(B, T, m, u * cout)
    out = None
    for i in range(m):
        yi = mx.pad(y[:, :, i], [(0, 0), (i, m - 1 - i), (0, 0)])
        out = yi if out is None else out + yi
    out = out.reshape(B, (T + m - 1) * u, cout)
    n = (T - 1) * u - 2 * padding + k
    return out[:, padding:padding + n]


class Conv1d(nn.Module):
    """torch Conv1d on (B, T, C), weight (out, k, in), zero padding both sides (see ``conv1d``)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self._cfg = (stride, padding, dilation)

    def __call__(self, x):
        y = conv1d(x, self.weight, *self._cfg)
        if "bias" in self:
            y = y + self.bias
        return y


class ConvTranspose1d(nn.Module):
    """torch ConvTranspose1d on (B, T, C); weight (out, k, in) as mlx.nn.ConvTranspose1d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self.stride, self.padding = stride, padding

    def __call__(self, x):
        y = conv_transpose1d(x, self.weight, self.stride, self.padding)
        if "bias" in self:
            y = y + self.bias
        return y


class LayerNorm(nn.Module):
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
    """Zero padding of the time axis of (B, T, C)."""
    return mx.pad(x, [(0, 0), (left, right), (0, 0)])


def masked(x, mask):
    return x if mask is None else x * mask
