"""S3TokenizerV2 25 Hz speech tokenizer (``s3tokenizer`` 0.3.0 ``S3TokenizerV2`` as chatterbox's
``models/s3tokenizer.S3Tokenizer`` wraps it) in MLX, with its 16 kHz 128-bin log-mel in numpy.

16 kHz audio -> log-mel (n_fft 400, hop 160, 100 frames/s) -> two stride-2 convs + GELU (25 Hz)
-> 6 blocks of rotary multi-head attention (20 heads of 64) + FSMN memory (depthwise conv k31 on
the values) and a GELU MLP -> FSQ: Linear(1280 -> 8), tanh, round to {-1, 0, 1}, base-3 code.

Parameter paths equal chatterbox's ``tokenizer.*`` keys minus the prefix, except the FSQ projection
``quantizer._codebook.project_down`` -> ``quantizer.codebook.project_down`` (MLX ignores members
starting with ``_``). Tensors are (B, T, C) inside; conv weights are (out, k, in).
"""
from __future__ import annotations

import math
import re

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common.mlx_layers import Conv1d, LayerNorm, Linear, ParameterFree  # noqa: E402

from .config import TokenizerConfig  # noqa: E402
from .mel import frames, hann_window, slaney_mel_filters64  # noqa: E402
from .prompt import prompt_audio  # noqa: E402

_CFG = TokenizerConfig()


# ================================================================== 16 kHz log-mel (numpy)
def log_mel_spectrogram(wav, cfg: TokenizerConfig = _CFG) -> np.ndarray:
    """chatterbox ``S3Tokenizer.log_mel_spectrogram``: (N,) 16 kHz -> (128, N // 160) float32.

    ``torch.stft(center=True)`` (reflect pad 200), periodic Hann, last frame dropped, power,
    slaney filters, ``log10(clamp 1e-10)``, floor at (max - 8), ``(x + 4) / 4``.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    pad = cfg.n_fft // 2
    if x.shape[0] <= pad:
        raise ValueError(f"audio of {x.shape[0]} samples is too short for the tokenizer log-mel "
                         f"(reflect padding of {pad} needs more)")
    x = np.pad(x, (pad, pad), mode="reflect")
    spec = np.fft.rfft(frames(x, cfg.n_fft, cfg.hop) * hann_window(cfg.n_fft), axis=-1)[:-1]
    power = spec.real ** 2 + spec.imag ** 2                               # (T, 201)
    mel = slaney_mel_filters64(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ power.T   # (128, T)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# ================================================================== rotary table
def rotary_cos_sin(dim: int = _CFG.rotary_dim, end: int = _CFG.rotary_len, theta: float = 10000.0):
    """s3tokenizer ``precompute_freqs_cis(64, 2048)`` as (cos, sin), each (end, dim) float32:
    float32 frequencies and angles (as torch), cos/sin of those angles rounded to float32."""
    expo = np.arange(0, dim, 2)[: dim // 2].astype(np.float32) / np.float32(dim)
    # torch: float32 pow, then float32 reciprocal (two roundings)
    inv = np.float32(1.0) / (theta ** expo.astype(np.float64)).astype(np.float32)
    ang = (np.arange(end, dtype=np.float32)[:, None] * inv[None]).astype(np.float32)
    cos = np.cos(ang.astype(np.float64)).astype(np.float32)
    sin = np.sin(ang.astype(np.float64)).astype(np.float32)
    return np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)


def _rotate(x, cos, sin):
    d = x.shape[-1] // 2
    return x * cos + mx.concatenate([-x[..., d:], x[..., :d]], axis=-1) * sin


def gelu(x):  # exact (erf) GELU, as torch
    return 0.5 * x * (1.0 + mx.erf(x * (1.0 / math.sqrt(2.0))))


# ================================================================== encoder
class FSMNMultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int, kernel_size: int):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)
        self.fsmn_block = {"weight": mx.zeros((n_state, kernel_size))}   # depthwise, (C, k)
        self._left = (kernel_size - 1) // 2

    def forward_fsmn(self, v, mask_pad):
        """Depthwise conv (k 31, zero pad 15/15) of the masked values, plus the values, masked."""
        v = v * mask_pad
        w = self.fsmn_block["weight"]
        c, k = w.shape
        t = v.shape[1]
        vp = mx.pad(v, [(0, 0), (self._left, k - 1 - self._left), (0, 0)])
        acc = vp[:, 0:t] * w[:, 0]
        for i in range(1, k):
            acc = acc + vp[:, i:i + t] * w[:, i]
        return (acc + v) * mask_pad

    def __call__(self, x, bias, mask_pad, cos, sin):
        b, t, d = x.shape
        h = self.n_head
        q = self.query(x).reshape(b, t, h, -1)
        k = self.key(x).reshape(b, t, h, -1)
        v = self.value(x)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        fsm = self.forward_fsmn(v, mask_pad)
        scale = (d // h) ** -0.25
        q = q.transpose(0, 2, 1, 3) * scale
        k = k.transpose(0, 2, 3, 1) * scale
        qk = q @ k
        if bias is not None:
            qk = qk + bias
        w = mx.softmax(qk, axis=-1, precise=True)
        wv = (w @ v.reshape(b, t, h, -1).transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3).reshape(b, t, d)
        return self.out(wv) + fsm


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, fsmn_kernel: int):
        super().__init__()
        self.attn = FSMNMultiHeadAttention(n_state, n_head, fsmn_kernel)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = [Linear(n_state, 4 * n_state), ParameterFree(), Linear(4 * n_state, n_state)]
        self.mlp_ln = LayerNorm(n_state)

    def __call__(self, x, bias, mask_pad, cos, sin):
        x = x + self.attn(self.attn_ln(x), bias, mask_pad, cos, sin)
        y = self.mlp_ln(x)
        return x + self.mlp[2](gelu(self.mlp[0](y)))


def _len_mask(lengths, t: int):
    return (mx.arange(t)[None, :] < lengths[:, None]).astype(mx.float32)   # (B, T)


class AudioEncoderV2(nn.Module):
    def __init__(self, cfg: TokenizerConfig = _CFG):
        super().__init__()
        self._stride = stride = cfg.stride
        self.conv1 = Conv1d(cfg.n_mels, cfg.n_state, 3, stride=stride, padding=1, bias=True)
        self.conv2 = Conv1d(cfg.n_state, cfg.n_state, 3, stride=stride, padding=1, bias=True)
        self.blocks = [ResidualAttentionBlock(cfg.n_state, cfg.n_head, cfg.fsmn_kernel)
                       for _ in range(cfg.n_layer)]
        cos, sin = rotary_cos_sin(cfg.rotary_dim, cfg.rotary_len)
        self._cos, self._sin = mx.array(cos), mx.array(sin)

    def __call__(self, x, x_len, return_layers: bool = False):
        """x (B, T, n_mels) log-mel, x_len (B,) int -> hidden (B, T/4, 1280), lengths."""
        t = x.shape[1]
        x_len = mx.array(x_len)
        x = gelu(self.conv1(x * _len_mask(x_len, t)[..., None]))
        x_len = (x_len - 1) // self._stride + 1
        t = (t - 1) // self._stride + 1
        x = gelu(self.conv2(x * _len_mask(x_len, t)[..., None]))
        x_len = (x_len - 1) // self._stride + 1
        t = (t - 1) // self._stride + 1
        m = _len_mask(x_len, t)
        mask_pad = m[..., None]                                        # (B, T, 1)
        full = bool(mx.all(m > 0).item())
        bias = None if full else ((1.0 - m) * -1.0e10)[:, None, None, :]
        if t > self._cos.shape[0]:
            raise ValueError(f"{t} encoder frames exceed the rotary table ({self._cos.shape[0]})")
        cos = self._cos[:t][None, :, None, :]
        sin = self._sin[:t][None, :, None, :]
        layers = []
        for blk in self.blocks:
            x = blk(x, bias, mask_pad, cos, sin)
            if return_layers:
                layers.append(x)
        if return_layers:
            return x, x_len, layers
        return x, x_len


# ================================================================== FSQ quantizer
class FSQCodebook(nn.Module):
    def __init__(self, dim: int, level: int):
        super().__init__()
        self.project_down = Linear(dim, 8)
        self._level = level

    def pre_round(self, x):
        """tanh(project_down(x)) * 0.999: the values rounded to {-1, 0, 1}."""
        return mx.tanh(self.project_down(x)) * 0.9990000128746033

    def encode(self, x):
        h = mx.round(self.pre_round(x)) + 1
        powers = mx.array([float(self._level ** i) for i in range(2 ** self._level)])
        return (h * powers).sum(axis=-1).astype(mx.int32)


class FSQVectorQuantization(nn.Module):
    def __init__(self, dim: int, level: int):
        super().__init__()
        self.codebook = FSQCodebook(dim, level)   # chatterbox: `_codebook`

    def encode(self, x):
        return self.codebook.encode(x)


# ================================================================== tokenizer
class S3TokenizerV2(nn.Module):
    """chatterbox ``S3Tokenizer("speech_tokenizer_v2_25hz")``: 16 kHz audio -> 25 Hz tokens."""

    def __init__(self, cfg: TokenizerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TokenizerConfig()
        self.encoder = AudioEncoderV2(cfg)
        self.quantizer = FSQVectorQuantization(cfg.n_state, cfg.fsq_level)

    def quantize(self, mel, mel_len):
        """mel (B, 128, T) numpy/mx, mel_len (B,) -> codes (B, T') int32, lengths (B,).

        As s3tokenizer: any utterance over 30 s (3000 frames) sends the batch through the
        sliding-window path (30 s windows, 4 s overlap, halves of the overlap dropped).
        """
        mel = np.asarray(mel, dtype=np.float32)
        mel_len = np.asarray(mel_len, dtype=np.int64)
        if (mel_len > self.cfg.window_frames).any():
            return self._quantize_long(mel, mel_len)
        hidden, code_len = self.encoder(mx.array(mel.transpose(0, 2, 1)), mx.array(mel_len))
        return self.quantizer.encode(hidden), code_len

    def _quantize_long(self, mel, mel_len):
        cfg = self.cfg
        window, overlap = cfg.window_frames, cfg.overlap_frames
        stride = window - overlap
        segs, lens, owner = [], [], []
        for b in range(mel.shape[0]):
            n = int(mel_len[b])
            starts = [0] if n <= window else list(range(0, n, stride))
            for s in starts:
                e = min(s + window, n) if n > window else n
                seg = np.zeros((mel.shape[1], window), np.float32)
                seg[:, :e - s] = mel[b, :, s:e]
                segs.append(seg)
                lens.append(e - s)
                owner.append(b)
        hidden, code_len = self.encoder(mx.array(np.stack(segs).transpose(0, 2, 1)),
                                        mx.array(np.array(lens)))
        codes = np.array(self.quantizer.encode(hidden))
        code_len = np.array(code_len)
        keep = (overlap // (cfg.sample_rate // cfg.hop) // 2) * cfg.token_rate  # tokens in half the overlap
        out = []
        for b in range(mel.shape[0]):
            idx = [i for i, o in enumerate(owner) if o == b]
            if int(mel_len[b]) <= window:
                out.append(codes[idx[0], :code_len[idx[0]]].tolist())
                continue
            merged = []
            for j, i in enumerate(idx):
                toks = codes[i, :code_len[i]].tolist()
                lo = 0 if j == 0 else keep
                hi = len(toks) if j == len(idx) - 1 else -keep
                merged.extend(toks[lo:hi])
            out.append(merged)
        width = max(len(o) for o in out)
        res = np.zeros((len(out), width), np.int32)
        for b, o in enumerate(out):
            res[b, :len(o)] = o
        return mx.array(res), mx.array(np.array([len(o) for o in out]))

    def __call__(self, wavs, max_len: int | None = None):
        """chatterbox ``S3Tokenizer.forward``: list (or one) 16 kHz waveform(s) -> (tokens (B, T)
        int32, lengths (B,)). Each mel is its own (max over the utterance); padded to a batch."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            wavs = [wavs]
        mels = []
        for w in wavs:
            w = np.asarray(w, dtype=np.float32)
            if w.ndim == 2 and w.shape[0] == 1:
                w = w[0]
            mel = log_mel_spectrogram(w, self.cfg)
            if max_len is not None:
                mel = mel[:, :max_len * 4]
            mels.append(mel)
        lens = np.array([m.shape[1] for m in mels])
        batch = np.zeros((len(mels), self.cfg.n_mels, lens.max()), np.float32)
        for i, m in enumerate(mels):
            batch[i, :, :m.shape[1]] = m
        return self.quantize(batch, lens)

    def tokenize(self, wav, sr: int = _CFG.sample_rate):
        """Speech tokens (T,) int32 numpy of one mono utterance at any rate (resampled to 16 kHz)."""
        x = prompt_audio(wav, sr, self.cfg.sample_rate, name="speech")
        codes, lens = self([x])
        return np.array(codes)[0, : int(np.array(lens)[0])]


# ================================================================== conversion
def tokenizer_rules(prefix: str = "tokenizer."):
    """Rules for chatterbox keys ``prefix + <S3Tokenizer key>`` producing ``prefix + <port path>``.

    ``_mel_filters`` / ``window`` are buffers the port computes itself (slaney filters, periodic
    Hann; the tests check them against chatterbox's buffers), so they are dropped.
    """
    from ports.common.convert import Drop, Rule, squeeze, transpose

    p = re.escape(prefix)
    return [
        Drop(rf"{p}(?:_mel_filters|window)"),
        Rule(rf"{p}encoder\.(conv[12])\.weight", rf"{prefix}encoder.\1.weight", transpose(0, 2, 1)),
        Rule(rf"{p}(encoder\.blocks\.\d+\.attn\.fsmn_block\.weight)", rf"{prefix}\1", squeeze(1)),
        Rule(rf"{p}quantizer\._codebook\.(project_down\.(?:weight|bias))",
             rf"{prefix}quantizer.codebook.\1"),
        Rule(rf"{p}encoder\..*\.(?:weight|bias)"),
    ]


TOKENIZER_RULES = tokenizer_rules("tokenizer.")


def load_tokenizer_state_dict(model: S3TokenizerV2, src, prefix: str = "tokenizer.", dtype=None):
    """Strictly convert chatterbox tokenizer tensors (keys ``prefix + ...``, numpy) and load them."""
    from ports.common.convert import KeyMap
    from ports.common.mlx_weights import convert_into

    return convert_into(model, KeyMap(tokenizer_rules(prefix), what="s3gen tokenizer weights"),
                        src, prefix=prefix, dtype=dtype)
