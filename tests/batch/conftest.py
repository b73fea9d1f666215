"""Shared fixtures for the ``ports batch`` tests: a random-weight orca model on disk and short
synthetic recordings (10-s minutes through the task options keep the model work small)."""
from __future__ import annotations

import pytest
from batch_audio import hydrophone


@pytest.fixture(scope="session")
def orca_weights(tmp_path_factory):
    from ports_parity.orca_v1 import save_random_weights

    return save_random_weights(tmp_path_factory.mktemp("orca_w"), seed=3)


@pytest.fixture(scope="session")
def audio_tree(tmp_path_factory):
    """in/a.wav (13 s stereo 16 kHz), in/sub/b.wav (4 s mono 8 kHz), in/bad.wav (corrupt)."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("batch_in")
    (d / "sub").mkdir()
    sf.write(d / "a.wav", hydrophone(13.0, seed=1), 16000, subtype="PCM_16")
    sf.write(d / "sub" / "b.wav", hydrophone(4.0, 8000, 1, seed=2)[:, 0], 8000, subtype="PCM_16")
    (d / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk-not-audio")
    return d
