"""Shared fixtures for the ``ports batch`` tests: a random-weight orca model on disk and short
synthetic recordings (10-s minutes through the task options keep the model work small), and an
HLS stream."""
from __future__ import annotations

import subprocess

import pytest
from batch_audio import T0, hydrophone


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


@pytest.fixture(scope="session")
def stream(tmp_path_factory):
    """<tmp>/streams/<T0>/live.m3u8 + live000..004.ts: 24 s of 48 kHz stereo AAC in 5-s
    segments."""
    import soundfile as sf

    base = tmp_path_factory.mktemp("hls")
    wav = base / "src.wav"
    sf.write(wav, hydrophone(24.0, 48000, 2, seed=5), 48000, subtype="PCM_16")
    d = base / "streams" / str(T0)
    d.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac",
                    "-b:a", "96k", "-f", "hls", "-hls_time", "5", "-hls_list_size", "0",
                    "-hls_segment_filename", str(d / "live%03d.ts"), str(d / "live.m3u8")],
                   check=True)
    return d
