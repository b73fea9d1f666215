"""Layers shared by the S3Gen parts (tokenizer, CAMPPlus, flow), channels-last (B, T, C)."""
from __future__ import annotations

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)


class Conv1d(nn.Module):
    """torch Conv1d on (B, T, C), weight (out, k, in), zero padding both sides. k > 1 or a stride
    runs as im2col + one matmul: it goes through the (preloaded) BLAS and is much faster than
    MLX's CPU conv."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = False):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self._cfg = (stride, padding, dilation)

    def __call__(self, x):
        cout, k, cin = self.weight.shape
        stride, pad, dil = self._cfg
        if pad:
            x = mx.pad(x, [(0, 0), (pad, pad), (0, 0)])
        t_out = (x.shape[1] - dil * (k - 1) - 1) // stride + 1
        span = stride * (t_out - 1) + 1
        cols = mx.concatenate([x[:, i * dil:i * dil + span:stride] for i in range(k)], axis=-1) \
            if k > 1 or stride > 1 else x
        y = cols @ self.weight.reshape(cout, k * cin).T
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
