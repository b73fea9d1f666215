"""Shared fixtures for the ``ports batch`` tests: a random-weight orca model on disk and short
synthetic recordings (10-s minutes through the task options keep the model work small)."""
from __future__ import annotations

import pytest
from batch_audio import hydrophone


@pytest.fixture(scope="session")
def orca_weights(tmp_path_factory):
    from ports.orca_v1.convert import save_hf
    from ports.orca_v1.model import OrcaResNet50, random_init_

    d = tmp_path_factory.mktemp("orca_w")
    m = random_init_(OrcaResNet50(), seed=3)
    save_hf({k: v.numpy() for k, v in m.state_dict().items()}, d)
    return d


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
