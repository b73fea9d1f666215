"""S3Gen's prompt log-mel (chatterbox ``models/s3gen/utils/mel.py``, Matcha-TTS) and the STFT
helpers it shares with the tokenizer's log-mel (slaney filters, Hann window, framing), in numpy (no
torch, no librosa at run time).

Original: 24 kHz mono, reflect pad (n_fft - hop) / 2 = 720 on both sides, ``torch.stft`` with
``center=False``, n_fft = window = 1920, hop 480, periodic Hann window, magnitude
``sqrt(re² + im² + 1e-9)``, librosa slaney mel filters (80 mels, 0–8000 Hz),
``log(clamp(x, 1e-5))``. The spectra are computed in float64 and returned as float32.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ports.common.audio import EmptyAudioError

from .config import PromptMelConfig
from .prompt import prompt_audio

_MEL = PromptMelConfig()


# ------------------------------------------------------------------ librosa-equivalent filters
def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    if mels.ndim:
        log_t = f >= min_log_hz
        mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    elif f >= min_log_hz:
        mels = min_log_mel + np.log(f / min_log_hz) / logstep
    return mels


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


def slaney_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                       fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)`` (slaney scale and norm), (n_mels,
    1 + n_fft // 2) float32, with librosa's rounding: weights stored as float32, then scaled."""
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax),
                                          n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


@lru_cache(maxsize=8)
def slaney_mel_filters64(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                         fmax: float | None = None) -> np.ndarray:
    """``slaney_mel_filters`` as float64, computed once per setting (read-only: shared)."""
    w = slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax).astype(np.float64)
    w.flags.writeable = False
    return w


def hann_window(n: int, periodic: bool = True) -> np.ndarray:
    """``torch.hann_window(n, periodic)`` in float64."""
    denom = n if periodic else n - 1
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / denom)


def frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(..., N) -> (..., n_frames, size) strided view, frames fully inside ``x``."""
    n = 1 + (x.shape[-1] - size) // hop
    return np.lib.stride_tricks.sliding_window_view(x, size, axis=-1)[..., ::hop, :][..., :n, :]


# ------------------------------------------------------------------ the 24 kHz prompt mel
def mel_spectrogram(y, n_fft: int = _MEL.n_fft, num_mels: int = _MEL.num_mels,
                    sampling_rate: int = _MEL.sampling_rate, hop_size: int = _MEL.hop_size,
                    win_size: int = _MEL.win_size, fmin: float = _MEL.fmin,
                    fmax: float = _MEL.fmax) -> np.ndarray:
    """chatterbox ``mel_spectrogram`` (center=False): (N,) or (B, N) -> (B, num_mels, T) float32."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    pad = (n_fft - hop_size) // 2
    if y.shape[-1] <= pad:
        raise EmptyAudioError(f"audio of {y.shape[-1]} samples is too short for the mel "
                              f"spectrogram (reflect padding of {pad} needs more)")
    y = np.pad(y, [(0, 0), (pad, pad)], mode="reflect")
    win = np.zeros(n_fft)
    off = (n_fft - win_size) // 2  # torch.stft centres a shorter window inside n_fft
    win[off:off + win_size] = hann_window(win_size)
    spec = np.fft.rfft(frames(y, n_fft, hop_size) * win, axis=-1)      # (B, T, F)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    mel = np.einsum("mf,btf->bmt", slaney_mel_filters64(sampling_rate, n_fft, num_mels, fmin, fmax), mag)
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32)


def prompt_mel(wav, sr: int = _MEL.sampling_rate) -> np.ndarray:
    """S3Gen ``embed_ref``'s ``prompt_feat``: (1, T, 80) float32 at 50 frames/s."""
    x = prompt_audio(wav, sr, _MEL.sampling_rate)
    return mel_spectrogram(x).transpose(0, 2, 1)
