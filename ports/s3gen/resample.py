"""torchaudio's ``transforms.Resample`` (windowed-sinc, Hann, 6 zero crossings, roll-off 0.99) in
numpy: what chatterbox's ``embed_ref`` uses to bring the prompt to 24 kHz and 16 kHz. Matching it
(rather than a polyphase resampler) keeps the prompt tokens and x-vector equal to the original's.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(16)
def sinc_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
    """(kernel (new, 2 * width + orig) float32, width) for the gcd-reduced rates, computed in
    float64 like torchaudio (its output-phase offsets j / new are float32 there) and cached as
    float32 as ``Resample`` does."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None] / orig
    # torch.arange(0, -new, -1) is int64 there and "/ new" gives float32 before meeting idx
    j = (np.arange(0, -new, -1) / new).astype(np.float32).astype(np.float64)[:, None]
    t = np.clip((j + idx) * base, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    k = k * window * (base / orig)
    return k.astype(np.float32), width


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """(..., N) float -> (..., ceil(N * new / orig)) float32, as ``torchaudio.transforms.Resample``."""
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} -> {new_sr}")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == new_sr:
        return x
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = sinc_kernel(orig, new)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    n = flat.shape[-1]
    padded = np.pad(flat, [(0, 0), (width, width + orig)]).astype(np.float64)
    win = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1], axis=-1)[:, ::orig]
    y = (win @ kernel.T.astype(np.float64)).reshape(flat.shape[0], -1)
    y = y[:, : math.ceil(new * n / orig)]
    return y.astype(np.float32).reshape(*shape[:-1], -1)
