"""Synthetic hydrophone-like audio for the batch tests."""
from __future__ import annotations

import numpy as np

T0 = 1700000000  # an HLS stream folder's unix start time: 2023-11-14T22:13:20Z


def hydrophone(seconds: float, sr: int = 16000, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.02 * rng.standard_normal(n)
    for c in rng.uniform(0, max(seconds - 1, 0.1), 3):
        w = (t > c) & (t < c + 1.0)
        x[w] += 0.2 * np.sin(2 * np.pi * (800 + 400 * (t[w] - c)) * t[w])
    return np.stack([x * (0.6 ** k) for k in range(channels)], 1).astype(np.float32)
