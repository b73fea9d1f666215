"""CAMPPlus speaker x-vector (chatterbox ``models/s3gen/xvector.py``, 3D-Speaker) in MLX, with the
Kaldi fbank front end (``torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80)``) in numpy.

Parameter paths equal chatterbox's ``speaker_encoder.*`` keys minus the prefix. BatchNorms run in
eval mode (running statistics). Tensors are channels-last inside: (B, T, C) for the TDNN part and
(B, F, T, C) (NHWC, H = frequency) for the 2-D head. Conv weights are stored MLX-style:
Conv1d (out, k, in), Conv2d (out, kh, kw, in) (see ``campplus_rules``).
"""
from __future__ import annotations

import math
import re

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common import mlx_ops  # noqa: E402
from ports.common.audio import EmptyAudioError  # noqa: E402
from ports.common.mlx_layers import Conv1d  # noqa: E402

from .config import CAMPPlusConfig  # noqa: E402
from .prompt import MIN_PROMPT_S, prompt_audio  # noqa: E402

_CFG = CAMPPlusConfig()

# ================================================================== Kaldi fbank (numpy, float64)
_F32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's floor before log


def _kaldi_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(num_bins: int = 80, padded_window: int = 512, sample_freq: float = 16000.0,
                    low_freq: float = 20.0, high_freq: float = 0.0) -> np.ndarray:
    """torchaudio ``get_mel_banks`` (no VTLN) plus its zero Nyquist column: (num_bins,
    padded_window // 2 + 1) float64."""
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = _kaldi_mel(sample_freq / padded_window * np.arange(num_fft_bins))[None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, [(0, 0), (0, 1)])


_BANKS: dict = {}


def kaldi_fbank(wav, num_mel_bins: int = _CFG.feat_dim,
                sample_frequency: float = float(_CFG.sample_rate), banks: np.ndarray | None = None) -> np.ndarray:
    """``torchaudio.compliance.kaldi.fbank(wav[None], num_mel_bins=80)`` with its defaults: 25 ms
    povey window, 10 ms shift, snip_edges, DC removal, preemphasis 0.97, 512-point power
    spectrum, 20 Hz..Nyquist, no dither, log floored at float32 eps. (N,) -> (frames, 80).

    Computed in float64. ``banks`` (num_mel_bins, 257) overrides the triangles: torchaudio builds
    them in float32 (up to 1.4e-5 off the exact formula, which ``kaldi_mel_banks`` evaluates)."""
    x = np.asarray(wav, dtype=np.float64)
    size = int(sample_frequency * 0.025)
    shift = int(sample_frequency * 0.010)
    padded = 1 << (size - 1).bit_length()
    if x.ndim != 1 or x.shape[0] < size:
        raise EmptyAudioError(f"kaldi fbank needs a 1-D waveform of at least {size} samples, got "
                              f"shape {x.shape}")
    n = 1 + (x.shape[0] - size) // shift
    fr = np.lib.stride_tricks.sliding_window_view(x, size)[::shift][:n]
    fr = fr - fr.mean(axis=1, keepdims=True)
    prev = np.concatenate([fr[:, :1], fr[:, :-1]], axis=1)
    fr = fr - 0.97 * prev
    win = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / (size - 1))) ** 0.85
    power = np.abs(np.fft.rfft(fr * win, n=padded, axis=1)) ** 2
    if banks is None:
        key = (num_mel_bins, padded, sample_frequency)
        if key not in _BANKS:
            _BANKS[key] = kaldi_mel_banks(num_mel_bins, padded, sample_frequency)
        banks = _BANKS[key]
    energies = power @ np.asarray(banks, dtype=np.float64).T
    return np.log(np.maximum(energies, _F32_EPS)).astype(np.float32)


def extract_feature(wav) -> np.ndarray:
    """chatterbox ``extract_feature`` for one utterance: fbank minus its mean over time, (1, T, 80)."""
    f = kaldi_fbank(wav).astype(np.float64)
    return (f - f.mean(axis=0, keepdims=True)).astype(np.float32)[None]


# ================================================================== layers
class BatchNorm(nn.Module):
    """Eval-mode BatchNorm over the last axis (running statistics, optional affine)."""

    def __init__(self, ch: int, affine: bool = True, eps: float = _CFG.bn_eps):
        super().__init__()
        self._eps = eps
        if affine:
            self.weight = mx.ones((ch,))
            self.bias = mx.zeros((ch,))
        self.running_mean = mx.zeros((ch,))
        self.running_var = mx.ones((ch,))

    def __call__(self, x):
        y = (x - self.running_mean) * mx.rsqrt(self.running_var + self._eps)
        if "weight" in self:
            y = y * self.weight + self.bias
        return y


class Nonlinear(nn.Module):
    """chatterbox ``get_nonlinear("batchnorm-relu")`` / ``("batchnorm_")``: keys ``batchnorm.*``."""

    def __init__(self, ch: int, relu: bool = True, affine: bool = True):
        super().__init__()
        self.batchnorm = BatchNorm(ch, affine)
        self._relu = relu

    def __call__(self, x):
        x = self.batchnorm(x)
        return mx.maximum(x, 0.0) if self._relu else x


class Conv2d(nn.Module):
    """Conv2d on NHWC (H = frequency, W = time), weight (out, kh, kw, in), no bias."""

    def __init__(self, cin: int, cout: int, k: int, stride=(1, 1), padding: int = 0):
        super().__init__()
        self.weight = mx.zeros((cout, k, k, cin))
        self._cfg = (tuple(stride), padding)

    def __call__(self, x):
        stride, pad = self._cfg
        return mx.conv2d(x, self.weight, stride=stride, padding=pad)


# ================================================================== FCM head
class BasicResBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = Conv2d(cin, planes, 3, stride=(stride, 1), padding=1)
        self.bn1 = BatchNorm(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1)
        self.bn2 = BatchNorm(planes)
        self.shortcut = []
        if stride != 1 or cin != planes:
            self.shortcut = [Conv2d(cin, planes, 1, stride=(stride, 1)), BatchNorm(planes)]

    def __call__(self, x):
        out = mx.maximum(self.bn1(self.conv1(x)), 0.0)
        out = self.bn2(self.conv2(out))
        sc = x
        for m in self.shortcut:
            sc = m(sc)
        return mx.maximum(out + sc, 0.0)


class FCM(nn.Module):
    def __init__(self, num_blocks, m_channels: int, feat_dim: int):
        super().__init__()
        self.conv1 = Conv2d(1, m_channels, 3, padding=1)
        self.bn1 = BatchNorm(m_channels)
        self.layer1 = [BasicResBlock(m_channels, m_channels, 2)] + \
            [BasicResBlock(m_channels, m_channels, 1) for _ in range(num_blocks[0] - 1)]
        # chatterbox builds layer2 with num_blocks[0] as well
        self.layer2 = [BasicResBlock(m_channels, m_channels, 2)] + \
            [BasicResBlock(m_channels, m_channels, 1) for _ in range(num_blocks[0] - 1)]
        self.conv2 = Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1)
        self.bn2 = BatchNorm(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def __call__(self, x):
        """(B, T, F) -> (B, T, C*F/8) with torch's channel order c * F' + f."""
        x = x.transpose(0, 2, 1)[..., None]                    # (B, F, T, 1)
        out = mx.maximum(self.bn1(self.conv1(x)), 0.0)
        for blk in self.layer1 + self.layer2:
            out = blk(out)
        out = mx.maximum(self.bn2(self.conv2(out)), 0.0)        # (B, F', T, C)
        b, f, t, c = out.shape
        return out.transpose(0, 2, 3, 1).reshape(b, t, c * f)


# ================================================================== TDNN part
class TDNNLayer(nn.Module):
    def __init__(self, cin, cout, k, stride=1, dilation=1):
        super().__init__()
        self.linear = Conv1d(cin, cout, k, stride, (k - 1) // 2 * dilation, dilation, bias=False)
        self.nonlinear = Nonlinear(cout)

    def __call__(self, x):
        return self.nonlinear(self.linear(x))


def _seg_pooling(x, seg_len: int = _CFG.seg_len):
    """avg_pool1d(kernel=stride=seg_len, ceil_mode=True) over time, each segment mean repeated
    seg_len times and cut to T. torch divides the last, partial window by its valid length."""
    b, t, c = x.shape
    nseg = math.ceil(t / seg_len)
    full = nseg * seg_len
    xp = mx.pad(x, [(0, 0), (0, full - t), (0, 0)]) if full != t else x
    sums = xp.reshape(b, nseg, seg_len, c).sum(axis=2)
    counts = np.minimum(seg_len, t - seg_len * np.arange(nseg)).astype(np.float32)
    seg = sums / mx.array(counts)[None, :, None]
    seg = mx.repeat(seg, seg_len, axis=1)
    return seg[:, :t]


class CAMLayer(nn.Module):
    def __init__(self, bn_ch, cout, k, padding, dilation, reduction=2):
        super().__init__()
        self.linear_local = Conv1d(bn_ch, cout, k, 1, padding, dilation, bias=False)
        self.linear1 = Conv1d(bn_ch, bn_ch // reduction, 1, bias=True)
        self.linear2 = Conv1d(bn_ch // reduction, cout, 1, bias=True)

    def __call__(self, x):
        y = self.linear_local(x)
        context = mlx_ops.mean(x, axis=1, keepdims=True) + _seg_pooling(x)
        context = mx.maximum(self.linear1(context), 0.0)
        return y * mx.sigmoid(self.linear2(context))


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin, cout, bn_ch, k, dilation):
        super().__init__()
        self.nonlinear1 = Nonlinear(cin)
        self.linear1 = Conv1d(cin, bn_ch, 1, bias=False)
        self.nonlinear2 = Nonlinear(bn_ch)
        self.cam_layer = CAMLayer(bn_ch, cout, k, (k - 1) // 2 * dilation, dilation)

    def __call__(self, x):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    def __init__(self, num_layers, cin, cout, bn_ch, k, dilation):
        super().__init__()
        self._n = num_layers
        for i in range(num_layers):
            setattr(self, f"tdnnd{i + 1}", CAMDenseTDNNLayer(cin + i * cout, cout, bn_ch, k, dilation))

    def __call__(self, x):
        for i in range(self._n):
            x = mx.concatenate([x, getattr(self, f"tdnnd{i + 1}")(x)], axis=-1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.nonlinear = Nonlinear(cin)
        self.linear = Conv1d(cin, cout, 1, bias=False)

    def __call__(self, x):
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = Nonlinear(cout, relu=False, affine=False)   # "batchnorm_"

    def __call__(self, x):
        return self.nonlinear(self.linear(x))


def statistics_pooling(x):
    """(B, T, C) -> (B, 2C): mean and unbiased std over time."""
    mean = mlx_ops.mean(x, axis=1)
    std = mx.sqrt(mlx_ops.var(x, axis=1, ddof=1))
    return mx.concatenate([mean, std], axis=-1)


class XVector(nn.Module):
    def __init__(self, channels: int, cfg: CAMPPlusConfig = _CFG):
        super().__init__()
        self.tdnn = TDNNLayer(channels, cfg.init_channels, 5, stride=2)
        ch = cfg.init_channels
        growth = cfg.growth_rate
        for i, (n, k, d) in enumerate(zip(cfg.block_layers, cfg.block_kernels, cfg.block_dilations)):
            setattr(self, f"block{i + 1}", CAMDenseTDNNBlock(n, ch, growth, cfg.bn_size * growth, k, d))
            ch = ch + n * growth
            setattr(self, f"transit{i + 1}", TransitLayer(ch, ch // 2))
            ch //= 2
        self.out_nonlinear = Nonlinear(ch)
        self.dense = DenseLayer(ch * 2, cfg.embedding_size)

    def __call__(self, x):
        x = self.tdnn(x)
        for i in range(1, 4):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        x = statistics_pooling(self.out_nonlinear(x))           # (B, 2C)
        return self.dense(x[:, None])[:, 0]                      # (B, 192)


class CAMPPlus(nn.Module):
    """chatterbox ``CAMPPlus(memory_efficient=False)`` (segment-level output, 192-d)."""

    def __init__(self, cfg: CAMPPlusConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CAMPPlusConfig()
        self.head = FCM(cfg.head_blocks, cfg.m_channels, cfg.feat_dim)
        self.xvector = XVector(self.head.out_channels, cfg)

    def __call__(self, feats):
        """feats (B, T, 80) mean-normalised fbank -> (B, 192)."""
        return self.xvector(self.head(feats))

    def inference(self, wav, sr: int = _CFG.sample_rate):
        """x-vector of one utterance, (1, 192) float32 mx.array, as chatterbox's
        ``speaker_encoder.inference`` on the 16 kHz prompt (other rates are resampled)."""
        rate = self.cfg.sample_rate
        x = prompt_audio(wav, sr, rate)
        if x.shape[0] < MIN_PROMPT_S * rate:
            raise EmptyAudioError(f"prompt too short for the x-vector: {x.shape[0]} samples")
        return self(mx.array(extract_feature(x)))


# ================================================================== conversion
def campplus_rules(prefix: str = "speaker_encoder."):
    """Rules for chatterbox keys ``prefix + <CAMPPlus key>`` producing ``prefix + <port path>``
    (same names; conv weights to MLX layout; ``num_batches_tracked`` dropped)."""
    from ports.common.convert import Drop, Rule, transpose

    p = re.escape(prefix)
    return [
        Drop(rf"{p}.*\.num_batches_tracked"),
        Rule(rf"{p}head\..*(?:conv\d|shortcut\.0)\.weight", fn=transpose(0, 2, 3, 1)),
        Rule(rf"{p}xvector\..*(?:linear|linear\d|linear_local)\.weight", fn=transpose(0, 2, 1)),
        Rule(rf"{p}.*\.(?:weight|bias|running_mean|running_var)"),
    ]


CAMPPLUS_RULES = campplus_rules("speaker_encoder.")


def load_campplus_state_dict(model: CAMPPlus, src, prefix: str = "speaker_encoder.", dtype=None):
    """Strictly convert chatterbox CAMPPlus tensors (keys ``prefix + ...``, numpy) and load them."""
    from ports.common.convert import KeyMap
    from ports.common.mlx_weights import convert_into

    return convert_into(model, KeyMap(campplus_rules(prefix), what="s3gen speaker_encoder weights"),
                        src, prefix=prefix, dtype=dtype)
