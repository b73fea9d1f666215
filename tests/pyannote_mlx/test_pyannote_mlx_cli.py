"""``ports segment`` end to end on files: outputs, resampling/downmix, bad input."""
import json

import numpy as np
import pytest

from ports.cli import main
from ports.common.audio import write_audio
from ports_parity.pyannote_mlx import parity
from ports.pyannote_mlx.inference import SegmentationInference


@pytest.fixture(scope="module")
def fx():
    return parity.fixture(64.3)


def test_segment_outputs_equal_in_memory_inference(fx, tmp_path):
    """Stereo 16 kHz file, streamed in blocks: same arrays as the in-memory inference of the
    channel mean (which test_pyannote_mlx_parity proves equal to pyannote)."""
    mono = fx.wav[: round(12.3 * 16000)]
    stereo = np.stack([mono * 0.5, mono * 1.5])
    wav = tmp_path / "in.wav"
    write_audio(wav, stereo, 16000, subtype="FLOAT")
    out = {k: tmp_path / f"o.{k}" for k in ("rttm", "json", "png", "npz")}
    rc = main(["segment", str(wav), "--model", str(fx.checkpoint), "--rttm", str(out["rttm"]),
               "--json", str(out["json"]), "--plot", str(out["png"]), "--dump", str(out["npz"])])
    assert rc == 0
    ref = SegmentationInference(fx.model)(stereo.mean(axis=0, dtype=np.float32), keep_logprobs=True)
    d = np.load(out["npz"])
    assert d["logprobs"].shape == (4, 589, 7) and d["multilabel"].shape == (4, 589, 3)
    assert np.array_equal(d["multilabel"], ref.multilabel)
    assert np.array_equal(d["logprobs"], ref.logprobs)
    assert np.array_equal(d["vad"], ref.vad()[0])
    doc = json.loads(out["json"].read_text())
    assert doc["speech"] == [list(r) for r in ref.speech_regions()]
    lines = out["rttm"].read_text().splitlines()
    assert len(lines) == len(doc["speech"]) and lines[0].startswith("SPEAKER in 1 ")
    assert out["png"].stat().st_size > 10_000


def test_segment_resamples_44k(fx, tmp_path, capsys):
    wav = tmp_path / "in44.wav"
    from ports.common.audio import resample

    write_audio(wav, resample(fx.wav[: 16000 * 11], 16000, 44100), 44100)
    out = tmp_path / "o.npz"
    assert main(["segment", str(wav), "--model", str(fx.checkpoint), "--dump", str(out)]) == 0
    d = np.load(out)
    assert d["multilabel"].shape == (2, 589, 3) and int(d["sample_rate"]) == 16000
    assert "speech region" in capsys.readouterr().out


def test_segment_very_short_file(fx, tmp_path):
    """31 ms (under one output frame): one zero-padded chunk, as pyannote's Inference does."""
    p = tmp_path / "short.wav"
    write_audio(p, fx.wav[16000: 16500], 16000)
    out = tmp_path / "o.npz"
    assert main(["segment", str(p), "--model", str(fx.checkpoint), "--dump", str(out)]) == 0
    assert np.load(out)["multilabel"].shape == (1, 589, 3)


@pytest.mark.parametrize("case", ["nan", "empty", "missing"])
def test_segment_bad_input(fx, tmp_path, capsys, case):
    p = tmp_path / f"{case}.wav"
    if case == "nan":
        x = np.zeros(32000, np.float32)
        x[100] = np.nan
        write_audio(p, x, 16000, subtype="FLOAT")
    elif case == "empty":
        p.write_bytes(b"")
    rc = main(["segment", str(p), "--model", str(fx.checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2
    assert {"nan": "NaN", "empty": "empty", "missing": "no such"}[case] in err
