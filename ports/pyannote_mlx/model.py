"""PyanNet (SincNet > 4-layer BiLSTM > 2 linear > powerset classifier) in MLX.

Layout: audio (B, 1, N) or (B, N) in, activations channels-last (B, T, C) inside, log-probs
(B, frames, 7) out, exactly as ``pyannote.audio.models.segmentation.PyanNet.forward``. Parameter
names mirror the original's state dict (see ``convert.py`` for the few differences).
"""
from __future__ import annotations

from ports.common.blas import import_mlx

mx = import_mlx()  # the optimized BLAS must be global before MLX loads
import mlx.nn as nn  # noqa: E402

from ports.common import mlx_ops  # noqa: E402

from .config import (CONV_CHANNELS, CONV_KERNEL, POOL, SINC_FILTERS, SINC_KERNEL,
                     SegmentationConfig)

EPS = 1e-5  # torch.nn.InstanceNorm1d default
SINCNET_BATCH = 8
SLOPE = 0.01  # F.leaky_relu default


def leaky_relu(x):
    return mx.maximum(x, SLOPE * x)


def max_pool3(x):
    """MaxPool1d(3, stride=3) over T of (B, T, C); floor mode drops the tail like torch."""
    b, t, c = x.shape
    n = t // POOL
    return x[:, : n * POOL].reshape(b, n, POOL, c).max(axis=2)


class InstanceNorm(nn.Module):
    """``InstanceNorm1d(C, affine=True)`` (no running stats), statistics over T."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x, channels_last: bool = True):
        # mlx_ops reductions are blocked two-level sums: MLX's own drift on 160k samples.
        if channels_last:
            x = x.transpose(0, 2, 1)
        y = mlx_ops.instance_norm(x, self.weight, self.bias, EPS)
        return y.transpose(0, 2, 1) if channels_last else y


class SincConv(nn.Module):
    """asteroid ``Encoder(ParamSincFB(80, 251, stride))``: the 80 filters are computed once at
    conversion from ``low_hz_``/``band_hz_``/``n_``/``window_`` (they only depend on those)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.weight = mx.zeros((SINC_FILTERS, SINC_KERNEL, 1))

    def __call__(self, x):
        # x (B, N, 1) -> (B, frames, 80); no bias, no padding
        return mx.conv1d(x, self.weight, stride=self.stride)


class Conv1d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        self.bias = mx.zeros((cout,))

    def __call__(self, x):
        return mx.conv1d(x, self.weight) + self.bias


class SincNet(nn.Module):
    def __init__(self, stride: int = 10):
        super().__init__()
        self.wav_norm1d = InstanceNorm(1)
        self.conv1d = [SincConv(stride), Conv1d(SINC_FILTERS, CONV_CHANNELS, CONV_KERNEL),
                       Conv1d(CONV_CHANNELS, CONV_CHANNELS, CONV_KERNEL)]
        self.norm1d = [InstanceNorm(SINC_FILTERS), InstanceNorm(CONV_CHANNELS),
                       InstanceNorm(CONV_CHANNELS)]

    def stages(self, waveforms):
        """Yield (name, activation) after each stage; activations are channels-last."""
        x = self.wav_norm1d(waveforms, channels_last=False)  # (B, 1, N)
        yield "wav_norm", x
        x = x.transpose(0, 2, 1)  # (B, N, 1)
        for c, (conv, norm) in enumerate(zip(self.conv1d, self.norm1d)):
            x = conv(x)
            if c == 0:
                yield "sinc_conv", x
                x = mx.abs(x)
            x = leaky_relu(norm(max_pool3(x)))
            yield f"sincnet_block{c}", x

    def __call__(self, waveforms):
        for _, x in self.stages(waveforms):
            pass
        return x


class BiLSTM(nn.Module):
    """``nn.LSTM(batch_first=True, bidirectional=True)`` with torch's parameter layout.

    Gates i, f, g, o as torch. ``bias_l{k}`` is torch's ``bias_ih + bias_hh``. The input
    projection of every step is one matmul per layer; the recurrence runs both directions as one
    batched matmul per step (the backward direction on the time-reversed sequence).
    """

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
        self._step = mx.compile(_lstm_step)

    def layer(self, x, k: int):
        """One bidirectional layer: (B, T, In) -> (B, T, 2H) = [forward, backward]."""
        b, t, _ = x.shape
        h_size = self.hidden
        p = self.parameters()
        w_ih = mx.stack([p[f"weight_ih_l{k}"], p[f"weight_ih_l{k}_reverse"]])  # (2, 4H, In)
        bias = mx.stack([p[f"bias_l{k}"], p[f"bias_l{k}_reverse"]])  # (2, 4H)
        w_hh_t = mx.stack([p[f"weight_hh_l{k}"], p[f"weight_hh_l{k}_reverse"]]).transpose(0, 2, 1)
        xr = mx.stack([x, x[:, ::-1]])  # (2, B, T, In), backward direction time-reversed
        xp = xr @ w_ih.transpose(0, 2, 1)[:, None] + bias[:, None, None]  # (2, B, T, 4H)
        xp = xp.transpose(2, 0, 1, 3)  # (T, 2, B, 4H): one contiguous slice per step
        h = mx.zeros((2, b, h_size), dtype=x.dtype)
        c = mx.zeros((2, b, h_size), dtype=x.dtype)
        outs = []
        for i in range(t):
            h, c = self._step(xp[i], h, c, w_hh_t)
            outs.append(h)
        hs = mx.stack(outs)  # (T, 2, B, H)
        fwd = hs[:, 0].transpose(1, 0, 2)
        bwd = hs[::-1, 1].transpose(1, 0, 2)
        return mx.concatenate([fwd, bwd], axis=-1)

    def __call__(self, x):
        for k in range(self.num_layers):
            x = self.layer(x, k)
        return x


def _lstm_step(xp_t, h, c, w_hh_t):
    gates = xp_t + h @ w_hh_t  # (2, B, 4H)
    i, f, g, o = mx.split(gates, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    h = mx.sigmoid(o) * mx.tanh(c)
    return h, c


class Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = mx.zeros((n_out, n_in))
        self.bias = mx.zeros((n_out,))

    def __call__(self, x):
        return mx.addmm(self.bias, x, self.weight.T)


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
        for k in range(self.lstm.num_layers):
            x = self.lstm.layer(x, k)
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
