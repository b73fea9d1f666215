import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ports_parity.common.bench import Case, run_cases
from ports_parity.common.parity import ParityReport, metrics


def test_metrics_values():
    ref = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    port = ref + np.array([[0, 1e-3, 0], [0, 0, -2e-3]])
    m = metrics(port, ref)
    assert m["max_abs"] == pytest.approx(2e-3) and m["mean_abs"] == pytest.approx(5e-4)
    assert m["max_rel"] == pytest.approx(4e-3)
    assert m["argmax_agree"] == 1.0 and m["cosine"] > 0.99999 and m["pearson"] > 0.99999
    assert 50 < m["snr_db"] < 70
    assert metrics(ref, ref)["snr_db"] == math.inf
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics(ref, ref[0])


def test_report_pass_fail_and_json(tmp_path):
    r = ParityReport("demo")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    r.compare("close", x + 1e-6, x, max_abs=1e-4)
    r.compare("exact", x, x, exact=True)
    r.check("tokens identical", True, "12 tokens")
    assert r.passed
    r.compare("far", x + 1.0, x, max_abs=1e-4, cosine_min=0.9)
    r.compare("bad shape", x[:2], x, max_abs=1.0)
    assert not r.passed and [s.name for s in r.failures()] == ["far", "bad shape"]
    text = r.table()
    assert "FAILED" in text and "far" in text and "PASS" in text
    with pytest.raises(AssertionError, match="far"):
        r.assert_passed()
    r.to_json(tmp_path / "p.json")
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["port"] == "demo" and d["passed"] is False
    st = d["stages"][0]
    assert {"name", "shape", "max_abs", "mean_abs", "tolerance", "passed"} <= set(st)
    assert d["stages"][1]["snr_db"] == "inf"
    with pytest.raises(ValueError, match="unknown tolerance"):
        r.compare("x", x, x, maxabs=1)


def test_bench_alternates_and_writes_json_png(tmp_path):
    order = []
    cases = [Case("sleepy", lambda: order.append("p"), lambda: order.append("o"), repeats=3, warmup=1)]
    rep = run_cases("demo", cases, progress=False)
    assert order == ["p", "o"] * 4
    row = rep.cases[0]
    assert row["ratio"] is not None and row["peak_rss_mb"] > 0
    rep.to_json(tmp_path / "b.json")
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["port"] == "demo" and {"name", "port_s", "original_s", "ratio", "peak_rss_mb"} <= set(d["cases"][0])
    assert "cpu_count" in d["machine"]
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "port/orig" in rep.table()


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "ports", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("parity", "bench", "convert", "demo"):
        assert cmd in out


def test_espeak_sample_and_conversation():
    from ports.common.samples import conversation, espeak

    x = espeak("hello world", sr=16000)
    assert x.dtype == np.float32 and 0.3 < x.size / 16000 < 3 and np.abs(x).max() > 0.05
    wav, turns = conversation(12.0, sr=16000, seed=1)
    assert wav.shape == (192000,) and len(turns) >= 3 and {t.speaker for t in turns} == {"spk0", "spk1"}
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1


FAKE_BENCH = """
import os, time
from ports_parity.common.bench import Case, run_cases

def run_bench(quick=False):
    here = os.path.dirname(__file__)
    def side(name, secs):
        def fn():
            open(os.path.join(here, name + "." + str(os.getpid())), "w").close()
            time.sleep(secs)
        return fn
    return run_cases("fake", [Case("c", side("port", 0.01), side("orig", 0.02), repeats=2,
                                   meta={"audio_s": 1.0}),
                              Case("port only", side("port", 0.01), repeats=1)], progress=False)
"""


def test_bench_isolated_times_each_side_in_its_own_process(tmp_path, monkeypatch):
    from ports_parity.common.bench import run_isolated

    (tmp_path / "fake_bench.py").write_text(FAKE_BENCH)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    rep = run_isolated("fake", module="fake_bench")
    port_pids = {p.suffix for p in tmp_path.glob("port.*")}
    orig_pids = {p.suffix for p in tmp_path.glob("orig.*")}
    assert len(port_pids) == 1 and len(orig_pids) == 1 and port_pids != orig_pids
    assert str(os.getpid()) not in {p.lstrip(".") for p in port_pids | orig_pids}
    row = {r["name"]: r for r in rep.cases}
    c = row["c"]
    assert c["port_s"] >= 0.01 and c["original_s"] >= 0.02 and c["isolated"]
    assert c["ratio"] == pytest.approx(c["port_s"] / c["original_s"])
    assert c["rtf"] == pytest.approx(c["port_s"]) and c["original_rtf"] == pytest.approx(c["original_s"])
    assert c["port_median_s"] >= c["port_s"] and c["peak_rss_mb"] and c["original_peak_rss_mb"]
    assert row["port only"]["original_s"] is None and row["port only"]["ratio"] is None
    assert "fake" in rep.table()
