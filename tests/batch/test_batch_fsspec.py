"""fsspec URLs as inputs (``memory://``, in this process; ``file://`` on Ray is in
test_batch_ray.py): the same outputs and rows as the local files, with the URL in place of the
path; HLS streams and manifests by URL; the single-file commands (detect, segment; transcribe
reads through the same ``load_audio``); up-front errors for a missing backend, an unknown
protocol and a missing URL."""
from __future__ import annotations

import json
import shutil
import sys
import uuid

import fsspec
import numpy as np
import pytest
from batch_audio import T0

from ports.batch.inputs import expand
from ports.batch.runner import STATE_DIR, run_job
from ports.batch.tasks import DetectTask


def outputs(out, replace=("", "")):
    return {p.relative_to(out).as_posix(): p.read_text().replace(*replace)
            for p in out.rglob("*.json") if STATE_DIR not in p.parts}


def rows(out, replace=("", "")):
    import pyarrow.parquet as pq

    return json.loads(json.dumps(pq.read_table(out / "results.parquet").to_pylist())
                      .replace(*replace))


@pytest.fixture
def bucket():
    """A fresh ``memory://`` bucket (the memory file system is one per process)."""
    fs = fsspec.filesystem("memory")
    name = f"bk{uuid.uuid4().hex[:8]}"
    yield fs, name
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


def upload(fs, folder, dst):
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            fs.pipe(f"{dst}/{p.relative_to(folder).as_posix()}", p.read_bytes())


@pytest.fixture(scope="module")
def local_out(orca_weights, audio_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("local_out")
    run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([str(audio_tree)]), out)
    return out


def test_memory_bucket_equals_local_folder(orca_weights, audio_tree, local_out, bucket,
                                           tmp_path):
    fs, name = bucket
    upload(fs, audio_tree, f"/{name}/in")
    url = f"memory://{name}/in/"
    srcs = expand([url])
    assert [(s.path, s.rel) for s in srcs] == [
        (f"memory://{name}/in/{f}.wav", f) for f in ("a", "bad", "sub/b")]
    out = tmp_path / "out"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), srcs, out)
    assert s.failed_sources == [f"{url}bad.wav"]
    local = (str(audio_tree) + "/", url)
    assert outputs(out) == outputs(local_out, local) and len(outputs(out)) == 2
    assert rows(out) == rows(local_out, local)  # incl. the failed row's message


def test_url_globs_and_manifests(audio_tree, bucket, tmp_path):
    fs, name = bucket
    upload(fs, audio_tree, f"/{name}/in")
    base = f"memory://{name}/in"
    assert [s.rel for s in expand([f"{base}/**/*.wav"])] == ["a", "bad", "sub/b"]
    assert [s.rel for s in expand([f"{base}/sub/*.wav"])] == ["b"]
    # a manifest read by URL: relative entries resolve against its folder; a missing entry is
    # planned (it fails as its row)
    fs.pipe(f"/{name}/list.csv", b"id,path\n1,in/a.wav\n2,in/gone.wav\n3,in/sub\n")
    srcs = expand([], f"memory://{name}/list.csv")
    assert [(s.path, s.rel) for s in srcs] == [
        (f"{base}/a.wav", "in/a"), (f"{base}/gone.wav", "in/gone"), (f"{base}/sub/b.wav", "b")]
    # a URL entry in a local manifest
    m = tmp_path / "m.txt"
    m.write_text(f"{base}/sub/b.wav\n")
    assert [(s.path, s.rel) for s in expand([], str(m))] == [(f"{base}/sub/b.wav", "b")]


def test_hls_stream_by_url_equals_local(orca_weights, stream, bucket, tmp_path):
    """Segments resolve against the playlist URL, a missing one is reported and the stream goes
    on, and the folder's unix-time name still gives absolute timestamps."""
    from ports.common import hls

    fs, name = bucket
    local = tmp_path / "streams" / str(T0)
    shutil.copytree(stream, local)
    (local / "live001.ts").unlink()
    upload(fs, local.parent, f"/{name}/streams")
    url = f"memory://{name}/streams/{T0}"
    pl = hls.parse_playlist(url)
    assert pl.path == f"{url}/live.m3u8" and pl.segments[0].path == f"{url}/live000.ts"
    task = DetectTask(str(orca_weights), {"minute_s": 10.0})
    srcs = expand([f"memory://{name}/streams"])
    assert [(s.path, s.rel, s.kind) for s in srcs] == [(url, str(T0), "hls")]
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert run_job(task, srcs, out).ok and run_job(task, expand([str(local.parent)]), ref).ok
    assert outputs(out) == outputs(ref, (str(local), url))
    doc = json.loads((out / f"{T0}.json").read_text())
    assert "live001.ts: missing" in doc["files"][0]["minutes"][0]["note"]
    # what detect_document takes absolute timestamps from
    assert doc["files"][0]["path"] == url and hls.is_hls(url) and hls.stream_start_unix(url) == T0


def test_audio_loaders_read_urls(audio_tree, bucket):
    """What ``ports segment`` / ``ports transcribe`` read with (``load_audio``, ``iter_blocks``,
    ``audio_info``) takes a URL and gives the same samples; bad URLs get the local errors."""
    from ports.common import audio

    fs, name = bucket
    upload(fs, audio_tree, f"/{name}/in")
    url, path = f"memory://{name}/in/a.wav", audio_tree / "a.wav"
    for kw in ({}, {"sr": 16000}, {"sr": 22050, "channels": "all"}):
        np.testing.assert_array_equal(audio.load_audio(url, **kw)[0],
                                      audio.load_audio(path, **kw)[0])
    for (t1, b1), (t2, b2) in zip(audio.iter_blocks(url, 4.0, sr=16000),
                                  audio.iter_blocks(path, 4.0, sr=16000), strict=True):
        assert t1 == t2
        np.testing.assert_array_equal(b1, b2)
    fs.pipe(f"/{name}/empty.wav", b"")
    cases = {f"memory://{name}/nope.wav": (audio.AudioNotFoundError, "no such audio file"),
             f"memory://{name}/empty.wav": (audio.EmptyAudioError, "empty"),
             f"memory://{name}/in/sub": (audio.UnsupportedAudioError, "is a folder"),
             f"memory://{name}/in/bad.wav": (audio.CorruptAudioError, "not a readable")}
    for u, (err, msg) in cases.items():
        with pytest.raises(err, match=msg) as e:
            audio.audio_info(u)
        assert str(e.value).startswith(u)


def test_ports_detect_takes_a_url(orca_weights, audio_tree, bucket, tmp_path):
    from ports.cli import main

    fs, name = bucket
    upload(fs, audio_tree, f"/{name}/in")
    url = f"memory://{name}/in/sub/b.wav"
    assert main(["detect", url, "--model", str(orca_weights), "--json",
                 str(tmp_path / "u.json")]) == 0
    assert main(["detect", str(audio_tree / "sub" / "b.wav"), "--model", str(orca_weights),
                 "--json", str(tmp_path / "p.json")]) == 0
    assert (tmp_path / "u.json").read_text() == (tmp_path / "p.json").read_text().replace(
        str(audio_tree / "sub" / "b.wav"), url)


def test_bad_urls_fail_up_front(monkeypatch, bucket, tmp_path, capsys):
    from fsspec.registry import _registry

    from ports.cli import main

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as on an install without s3fs
    monkeypatch.delitem(_registry, "s3", raising=False)
    _, name = bucket
    out = tmp_path / "o"
    cases = [(["s3://bucket/hls/"], "pip install s3fs"),
             (["nope://bucket/a.wav"], "unknown protocol nope://"),
             ([f"memory://{name}/missing/"], f"memory://{name}/missing/: no such file"),
             (["--manifest", f"memory://{name}/list.txt"], f"memory://{name}/list.txt"),
             (["--manifest", str(tmp_path / "m.txt")], "pip install s3fs")]
    (tmp_path / "m.txt").write_text("s3://bucket/a.wav\n")
    for args, msg in cases:
        assert main(["batch", "detect", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_ports_segment_takes_a_url(bucket, tmp_path):
    from ports.cli import main
    from ports.common.audio import write_audio
    from ports_parity.pyannote_mlx import parity

    fs, name = bucket
    fx = parity.fixture(12.5)
    wav = tmp_path / "conv.wav"
    write_audio(wav, np.stack([fx.wav * 0.5, fx.wav]), 16000)
    url = f"memory://{name}/talks/conv.wav"
    fs.pipe(url, wav.read_bytes())
    for src, tag in ((url, "u"), (str(wav), "p")):
        assert main(["segment", src, "--model", str(fx.checkpoint), "--rttm",
                     str(tmp_path / f"{tag}.rttm"), "--json", str(tmp_path / f"{tag}.json")]) == 0
    assert (tmp_path / "u.rttm").read_bytes() == (tmp_path / "p.rttm").read_bytes()
    assert (tmp_path / "u.json").read_text() == (tmp_path / "p.json").read_text().replace(
        str(wav), url)
