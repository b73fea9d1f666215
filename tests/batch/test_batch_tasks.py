"""``ports batch segment`` writes what ``ports segment --rttm --json`` writes (same writers)."""
from __future__ import annotations

import numpy as np


def test_batch_segment_equals_ports_segment(tmp_path):
    from ports.cli import main
    from ports.common.audio import write_audio
    from ports_parity.pyannote_mlx import parity

    fx = parity.fixture(21.5)
    d = tmp_path / "in" / "talks"
    d.mkdir(parents=True)
    wav = d / "conv.wav"
    write_audio(wav, np.stack([fx.wav * 0.5, fx.wav]), 16000)
    (d / "empty.wav").write_bytes(b"")
    rttm, js = tmp_path / "s.rttm", tmp_path / "s.json"
    assert main(["segment", str(wav), "--model", str(fx.checkpoint), "--rttm", str(rttm),
                 "--json", str(js)]) == 0
    out = tmp_path / "out"
    assert main(["batch", "segment", str(tmp_path / "in"), "--out", str(out),
                 "--model", str(fx.checkpoint)]) == 1  # empty.wav fails, conv.wav does not
    assert (out / "talks" / "conv.rttm").read_bytes() == rttm.read_bytes()
    assert (out / "talks" / "conv.json").read_bytes() == js.read_bytes()
    assert rttm.read_text().count("SPEECH") >= 1
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert [(r["rel"], r["ok"]) for r in rows] == [("talks/conv", True), ("talks/empty", False)]
    assert "empty" in rows[1]["error"]


def test_batch_transcribe_equals_ports_transcribe(tmp_path, speech16k):
    """Real tiny.en (the CTranslate2 copy of the released weights); same writers, same bytes."""
    from ports.cli import main
    from ports.common.audio import write_audio
    from ports_parity.real_weights import whisper_tiny_en

    model = str(whisper_tiny_en())
    d = tmp_path / "in"
    d.mkdir()
    write_audio(d / "hello.wav", speech16k, 16000)
    assert main(["transcribe", str(d / "hello.wav"), "-f", "all", "-o", str(tmp_path / "s"),
                 "--model", model]) == 0
    out = tmp_path / "out"
    assert main(["batch", "transcribe", str(d), "--out", str(out), "--model", model]) == 0
    for ext in ("txt", "srt", "json"):
        assert (out / f"hello.{ext}").read_bytes() == (tmp_path / "s" / f"hello.{ext}").read_bytes()
    assert "lazy dog" in (out / "hello.txt").read_text().lower()
