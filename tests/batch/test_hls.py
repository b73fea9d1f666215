"""HLS input (Orcasound layout): ffmpeg-made AAC segments, minutes as the live system cuts them,
absolute timestamps from the folder's unix time, missing/corrupt segments, empty playlists."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from batch_audio import T0

from ports.batch.inputs import expand
from ports.batch.runner import run_job
from ports.batch.tasks import DetectTask
from ports.common import hls


def detector(weights, minute_s=10.0):
    from ports.orca_v1.config import DetectConfig, OrcaConfig
    from ports.orca_v1.pipeline import OrcaDetector

    cfg = dataclasses.replace(OrcaConfig(), detect=DetectConfig(minute_s=minute_s))
    return OrcaDetector.from_pretrained(weights, cfg=cfg)


def test_playlist_minutes_and_decoding_like_the_live_system(stream, tmp_path):
    pl = hls.parse_playlist(stream)
    assert pl.path.endswith("live.m3u8") and len(pl.segments) == 5
    assert abs(pl.duration_s - 24.0) < 0.2
    groups = pl.minutes(10.0)
    assert [len(g) for g in groups] == [2, 2, 1]
    assert hls.stream_start_unix(stream) == T0 and hls.stream_start_unix(pl.path) == T0
    assert hls.iso_utc(T0 + 60) == "2023-11-14T22:14:20Z"
    # the live system: `cat` the segments, ffmpeg -> WAV (pcm_s16le), read back with soundfile
    import soundfile as sf

    cat = tmp_path / "cat.ts"
    cat.write_bytes(b"".join(Path(s.path).read_bytes() for s in groups[1]))
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(cat), str(tmp_path / "m.wav")],
                   check=True)
    ref, sr = sf.read(tmp_path / "m.wav", dtype="float32", always_2d=True)
    m = hls.read_minute(pl, 1, 10.0)
    assert m.samplerate == sr == 48000 and m.offset_s == groups[1][0].offset_s and not m.note
    np.testing.assert_array_equal(m.samples, ref)


def test_detect_hls_batch_equals_single_file(orca_weights, stream, tmp_path):
    from ports.orca_v1.cli import write_detect_json

    r = detector(orca_weights).detect_file(str(stream))
    assert [m.offset_s for m in r.minutes] == [s[0].offset_s for s in
                                              hls.parse_playlist(stream).minutes(10.0)]
    write_detect_json(tmp_path / "single.json", [r])
    out = tmp_path / "out"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}),
                expand([str(stream.parent)]), out)  # a folder of stream folders
    assert s.ok and s.units == 3
    assert (out / f"{T0}.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    # absolute timestamps in the OrcaHello documents (forced positive to get documents)
    from ports.orca_v1.cli import detect_document

    for m in r.minutes:
        m.global_prediction = 1
    docs = detect_document([r])["orcahello"]
    assert [d["timestamp"] for d in docs] == [hls.iso_utc(T0 + m.offset_s) for m in r.minutes]
    assert docs[0]["timestamp"] == "2023-11-14T22:13:20Z"
    assert len({d["id"] for d in docs}) == 3 and detect_document([r])["orcahello"] == docs


def test_missing_and_corrupt_segments_reported_stream_goes_on(orca_weights, stream, tmp_path):
    d = tmp_path / str(T0)
    shutil.copytree(stream, d)
    (d / "live001.ts").unlink()
    (d / "live003.ts").write_bytes(b"\x47" + bytes(range(256)) * 40)  # not AAC in TS
    out = tmp_path / "out"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([str(d)]), out)
    assert s.ok
    doc = json.loads((out / f"{T0}.json").read_text())
    notes = [m["note"] for m in doc["files"][0]["minutes"]]
    assert "live001.ts: missing" in notes[0] and "live003.ts: corrupt" in notes[1]
    assert notes[2] == ""
    # each damaged minute still scored what it had (one ~5-s segment -> ~4 windows)
    assert all(len(m["window_scores"]) >= 2 for m in doc["files"][0]["minutes"])
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert "live001.ts: missing" in rows[0]["note"] and all(r["ok"] for r in rows)


def test_empty_playlist_is_a_failed_row(orca_weights, tmp_path):
    d = tmp_path / "1700000100"
    d.mkdir()
    (d / "live.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n")
    out = tmp_path / "out"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([str(d)]), out)
    assert s.failed_sources == [str(d)]
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 1 and not rows[0]["ok"] and "no segments" in rows[0]["error"]
    with pytest.raises(Exception, match="no segments"):
        detector(orca_weights).detect_file(str(d))


def test_ports_detect_cli_takes_a_playlist(orca_weights, stream, tmp_path, capsys):
    from ports.cli import main

    assert main(["detect", str(stream / "live.m3u8"), "--model", str(orca_weights),
                 "--json", str(tmp_path / "d.json")]) == 0
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["files"][0]["samplerate"] == 48000 and len(doc["files"][0]["minutes"]) == 1
