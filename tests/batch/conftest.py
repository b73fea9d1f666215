"""Shared fixtures for the ``ports batch`` tests: a random-weight orca model on disk and short
synthetic recordings (10-s minutes through the task options keep the model work small)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def orca_weights(tmp_path_factory):
    from ports.orca_v1.convert import save_hf
    from ports.orca_v1.model import OrcaResNet50, random_init_

    d = tmp_path_factory.mktemp("orca_w")
    m = random_init_(OrcaResNet50(), seed=3)
    save_hf({k: v.numpy() for k, v in m.state_dict().items()}, d)
    return d


def hydrophone(seconds: float, sr: int = 16000, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.02 * rng.standard_normal(n)
    for c in rng.uniform(0, max(seconds - 1, 0.1), 3):
        w = (t > c) & (t < c + 1.0)
        x[w] += 0.2 * np.sin(2 * np.pi * (800 + 400 * (t[w] - c)) * t[w])
    return np.stack([x * (0.6 ** k) for k in range(channels)], 1).astype(np.float32)


@pytest.fixture(scope="session")
def audio_tree(tmp_path_factory):
    """in/a.wav (23 s stereo 16 kHz), in/sub/b.wav (4 s mono 8 kHz), in/bad.wav (corrupt)."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("batch_in")
    (d / "sub").mkdir()
    sf.write(d / "a.wav", hydrophone(23.0, seed=1), 16000, subtype="PCM_16")
    sf.write(d / "sub" / "b.wav", hydrophone(4.0, 8000, 1, seed=2)[:, 0], 8000, subtype="PCM_16")
    (d / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk-not-audio")
    return d
