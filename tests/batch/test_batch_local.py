"""``ports batch`` with the local engine: same outputs as the single-file command, per-row
failures, manifests, resume (also after SIGKILL), and no Ray needed."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ports.batch.inputs import InputError, expand, read_manifest
from ports.batch.runner import STATE_DIR, local_engine, run_job
from ports.batch.tasks import DetectTask

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def single_file_json(weights, path: str, out: Path, minute_s: float = 10.0) -> bytes:
    """What ``ports detect PATH --json`` writes, with ``minute_s`` minutes."""
    from ports.orca_v1.cli import write_detect_json
    from ports.orca_v1.config import DetectConfig, OrcaConfig
    from ports.orca_v1.pipeline import OrcaDetector

    cfg = dataclasses.replace(OrcaConfig(), detect=DetectConfig(minute_s=minute_s))
    det = OrcaDetector.from_pretrained(weights, cfg=cfg)
    write_detect_json(out, [det.detect_file(path)])
    return out.read_bytes()


def read_rows(out: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out / "results.parquet").to_pylist()


def test_inputs_expand(audio_tree, tmp_path):
    srcs = expand([str(audio_tree)])
    assert [s.rel for s in srcs] == ["a", "bad", "sub/b"]
    assert [s.rel for s in expand([str(audio_tree / "sub" / "*.wav")])] == ["b"]
    assert [s.rel for s in expand([str(audio_tree / "**" / "*.wav")])] == ["a", "bad", "sub/b"]
    m = tmp_path / "m.csv"
    m.write_text(f"id,path\n1,{audio_tree / 'a.wav'}\n2,sub/x.wav\n")
    assert read_manifest(m) == [str(audio_tree / "a.wav"), "sub/x.wav"]
    srcs = expand([], str(m))
    assert srcs[1].path == str(tmp_path / "sub" / "x.wav") and srcs[1].rel == "sub/x"
    with pytest.raises(InputError, match="nope.txt"):
        expand([], str(tmp_path / "nope.txt"))
    other = tmp_path / "x" / "a.wav"
    other.parent.mkdir()
    other.write_bytes(b"")
    with pytest.raises(InputError, match="would both write"):
        expand([str(audio_tree / "a.wav"), str(other)])


def test_local_equals_single_file_and_failed_row(orca_weights, audio_tree, tmp_path):
    out = tmp_path / "out"
    task = DetectTask(str(orca_weights), {"minute_s": 10.0})
    s = run_job(task, expand([str(audio_tree)]), out)
    assert s.failed_sources == [str(audio_tree / "bad.wav")] and not s.ok
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")
                  if STATE_DIR not in p.parts) == ["a.json", "sub/b.json"]
    for rel, name in (("a", "a.wav"), ("sub/b", "sub/b.wav")):
        ref = single_file_json(orca_weights, str(audio_tree / name), tmp_path / "ref.json")
        assert (out / f"{rel}.json").read_bytes() == ref
    rows = read_rows(out)
    assert [(Path(r["source"]).name, r["start_s"], r["duration_s"], r["ok"]) for r in rows] == [
        ("a.wav", 0.0, 10.0, True), ("a.wav", 10.0, 10.0, True), ("a.wav", 20.0, 3.0, True),
        ("bad.wav", 0.0, 0.0, False), ("b.wav", 0.0, 4.0, True)]
    bad = rows[3]
    assert "bad.wav" in bad["error"] and "CorruptAudioError" in bad["error"]
    m = json.loads(rows[0]["result"])["minute"]
    assert m["offset_s"] == 0.0 and len(m["window_scores"]) == 9
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_resume_runs_only_the_rest(orca_weights, audio_tree, tmp_path):
    out, srcs = tmp_path / "out", expand([str(audio_tree / "a.wav"), str(audio_tree / "sub")])
    task = DetectTask(str(orca_weights), {"minute_s": 10.0})

    def killed_after(n):
        def engine(task, units):
            for i, row in enumerate(local_engine(task, units)):
                yield row
                if i + 1 == n:
                    raise KeyboardInterrupt  # as if the job was killed here
        return engine

    with pytest.raises(KeyboardInterrupt):
        run_job(task, srcs, out, engine=killed_after(2))
    seen = []

    def counting(task, units):
        seen.extend(u["key"] for u in units)
        yield from local_engine(task, units)

    s = run_job(task, srcs, out, engine=counting, resume=True)
    assert s.ok and s.skipped == 2 and s.ran == 2 and len(seen) == 2
    full = tmp_path / "full"
    run_job(task, srcs, full)
    for rel in ("a.json", "b.json"):
        assert (out / rel).read_bytes() == (full / rel).read_bytes()
    assert read_rows(out) == read_rows(full)
    with pytest.raises(ValueError, match="different job"):
        run_job(DetectTask(str(orca_weights), {"minute_s": 20.0}), srcs, out, resume=True)


def test_resume_after_sigkill(tmp_path):
    """A real SIGKILL of the CLI mid-run; the rerun with --resume does only the rest."""
    ins = []
    for i in range(5):
        p = tmp_path / f"f{i}.wav"
        p.write_bytes(b"")  # SleepTask never reads its inputs
        ins.append(str(p))
    out = tmp_path / "out"
    cmd = [PY, "-m", "ports", "batch", "detect", *ins, "--out", str(out),
           "--task-class", "ports.batch.testing:SleepTask"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    journal = out / STATE_DIR / "journal.jsonl"
    t0 = time.time()
    while time.time() - t0 < 60:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len([ln for ln in journal.read_text().splitlines() if ln.strip()])
    assert 3 <= done < 20, done
    r = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"ran {20 - done}, resumed {done}" in r.stdout
    rows = read_rows(out)
    assert len(rows) == 20 and len({(x["source"], x["index"]) for x in rows}) == 20
    assert all(x["ok"] for x in rows)
    assert json.loads((out / "f0.json").read_text()) == [0, 1, 2, 3]


NO_RAY = """
import sys
sys.modules["ray"] = None  # any `import ray` fails, as on an install without the scale extra
from ports.cli import main
w, a, j, o = sys.argv[1:5]
rc1 = main(["detect", a, "--model", w, "--json", j])
rc2 = main(["batch", "detect", a, "--out", o, "--model", w])
rc3 = main(["batch", "detect", a, "--out", o, "--model", w, "--engine", "ray"])
print("RC", rc1, rc2, rc3, "ray" in sys.modules and sys.modules["ray"] is not None)
"""


def test_cli_without_ray_equals_ports_detect(orca_weights, audio_tree, tmp_path):
    """``ports detect`` and ``ports batch detect`` (local) work without Ray and agree; the Ray
    engine says what to install."""
    a = audio_tree / "sub" / "b.wav"
    r = subprocess.run([PY, "-c", NO_RAY, str(orca_weights), str(a), str(tmp_path / "d.json"),
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "RC 0 0 2 False" in r.stdout, r.stdout + r.stderr
    assert "audio-ports[scale]" in r.stderr
    assert (tmp_path / "d.json").read_bytes() == (tmp_path / "o" / "b.json").read_bytes()


def test_cli_manifest_missing_fails_up_front(tmp_path, capsys):
    from ports.cli import main

    nope = tmp_path / "missing.txt"
    assert main(["batch", "detect", "--manifest", str(nope), "--out", str(tmp_path / "o")]) == 2
    assert str(nope) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_failed_count_and_exit_status(orca_weights, audio_tree, tmp_path, capsys):
    from ports.cli import main

    m = tmp_path / "list.txt"
    m.write_text(f"# corpus\n{audio_tree / 'sub' / 'b.wav'}\n{tmp_path / 'gone.wav'}\n")
    out = tmp_path / "o"
    assert main(["batch", "detect", "--manifest", str(m), "--out", str(out),
                 "--model", str(orca_weights)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 input(s) failed" in err and "gone.wav" in err
    assert (out / "b.json").is_file()  # outside the manifest folder: by name
    rows = read_rows(out)
    assert [r["ok"] for r in rows] == [True, False] or [r["ok"] for r in rows] == [False, True]
