"""Benchmark harness: a port and its original timed as a ratio, each side in its own process.

``run_isolated(port)`` runs the port's bench module twice in fresh interpreters, timing only the
port in one and only the original in the other (``AUDIO_PORTS_BENCH_SIDE``), then merges the
rows: one side's threads (torch's spinning OpenMP pool, a globally preloaded BLAS) cannot slow the
other, which distorted in-process results before (see benchmarks/README.md). ``run_cases`` alone
times both sides alternately in one process (``ports bench --in-process``). Rows give min and
median of the repeats, peak RSS per side and, where a case says how much audio it processes
(``meta={"audio_s": ...}``), the real-time factor of each side.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


class PeakRSS:
    """Context manager sampling RSS every few ms in a thread; ``.peak_mb`` afterwards."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self.peak_mb = rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


@dataclass
class Case:
    name: str
    port_fn: Callable[[], Any]
    original_fn: Callable[[], Any] | None = None
    repeats: int = 5
    warmup: int = 1
    meta: dict = field(default_factory=dict)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor(), "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for mod, attr in (("torch", "__version__"), ("mlx.core", "__version__"),
                      ("max", "__version__"), ("numpy", "__version__")):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, attr, "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    from ports.common.blas import loaded

    info["preloaded_blas"] = loaded()
    return info


SIDE_ENV = "AUDIO_PORTS_BENCH_SIDE"  # "port" or "original": time only that side


def timing_side() -> str | None:
    """The side this process times (set by :func:`run_isolated`), or None for both."""
    side = os.environ.get(SIDE_ENV) or None
    if side not in (None, "port", "original"):
        raise ValueError(f"{SIDE_ENV} must be 'port' or 'original', got {side!r}")
    return side


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _timed(fn, repeats: int, warmup: int) -> tuple[list[float], float]:
    for _ in range(warmup):
        fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        gc.collect()
        with PeakRSS() as rss:
            times.append(_time(fn))
        peak = max(peak, rss.peak_mb)
    return times, peak


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """Ratios and real-time factors from a row's per-side times."""
    p, o = row.get("port_s"), row.get("original_s")
    row["ratio"] = p / o if p and o else None
    row["speedup"] = o / p if p and o else None
    if row.get("audio_s"):
        row["rtf"] = p / row["audio_s"] if p else None
        row["original_rtf"] = o / row["audio_s"] if o else None
    return row


def run_case(case: Case, side: str | None = None) -> dict[str, Any]:
    """Time ``case``: both sides alternately (``side=None``) or only one of them."""
    port_t: list[float] = []
    orig_t: list[float] = []
    port_peak = orig_peak = 0.0
    has_orig = case.original_fn is not None
    if side is None:
        for _ in range(case.warmup):
            case.port_fn()
            if has_orig:
                case.original_fn()
        for _ in range(case.repeats):  # alternate, so drift hits both sides alike
            t, pk = _timed(case.port_fn, 1, 0)
            port_t += t
            port_peak = max(port_peak, pk)
            if has_orig:
                t, pk = _timed(case.original_fn, 1, 0)
                orig_t += t
                orig_peak = max(orig_peak, pk)
    elif side == "port":
        port_t, port_peak = _timed(case.port_fn, case.repeats, case.warmup)
    elif has_orig:
        orig_t, orig_peak = _timed(case.original_fn, case.repeats, case.warmup)
    row: dict[str, Any] = {
        "name": case.name,
        "port_s": min(port_t) if port_t else None,
        "port_median_s": statistics.median(port_t) if port_t else None,
        "original_s": min(orig_t) if orig_t else None,
        "original_median_s": statistics.median(orig_t) if orig_t else None,
        "peak_rss_mb": port_peak or None, "original_peak_rss_mb": orig_peak or None,
        "repeats": case.repeats, "isolated": side is not None,
    }
    row.update(case.meta)
    return _finish(row)


class BenchReport:
    def __init__(self, port: str, rows: list[dict[str, Any]], machine: dict[str, Any]):
        self.port, self.cases, self.machine = port, rows, machine

    def table(self) -> str:
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        hdr = ("case", "port s (median)", "original s (median)", "port/orig", "RTF port/orig",
               "peak RSS MB port/orig")
        rows = [hdr] + [(r["name"],
                         f"{f(r['port_s'], '.4f')} ({f(r.get('port_median_s'), '.4f')})",
                         f"{f(r['original_s'], '.4f')} ({f(r.get('original_median_s'), '.4f')})",
                         f(r["ratio"], ".3f"),
                         f"{f(r.get('rtf'), '.3f')}/{f(r.get('original_rtf'), '.3f')}",
                         f"{f(r.get('peak_rss_mb'), '.0f')}/{f(r.get('original_peak_rss_mb'), '.0f')}")
                        for r in self.cases]
        w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        lines = ["  ".join(c.ljust(x) for c, x in zip(r, w)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        return f"{self.port} benchmark (min of repeats; ratio < 1 means the port is faster)\n" + \
            "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "machine": self.machine, "cases": self.cases}

    def to_json(self, path: str | os.PathLike, plot: bool = True) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=str)
        if plot:
            self.plot(os.path.splitext(str(path))[0] + ".png")

    def plot(self, path: str | os.PathLike) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [r["name"] for r in self.cases]
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) + 2), 3.6))
        ax.bar(x - 0.2, [r["port_s"] or 0 for r in self.cases], 0.4, label=f"{self.port}")
        ax.bar(x + 0.2, [r["original_s"] or 0 for r in self.cases], 0.4, label="original")
        for i, r in enumerate(self.cases):
            if r["ratio"] is not None:
                ax.text(i, max(r["port_s"], r["original_s"]), f"{r['ratio']:.2f}x",
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("seconds (min of repeats)")
        ax.set_title(f"{self.port}: port vs original ({self.machine.get('machine', '')})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def run_cases(port: str, cases: list[Case], *, progress: bool = True) -> BenchReport:
    """Time ``cases`` in this process: both sides, or only :func:`timing_side`'s."""
    from ports.common.progress import progress as bar

    side = timing_side()
    rows = [run_case(c, side)
            for c in bar(cases, desc=f"bench {port}", unit="case", enable=progress)]
    return BenchReport(port, rows, machine_info())


_SIDE_KEYS = {"port": ("port_s", "port_median_s", "peak_rss_mb", "rtf"),
              "original": ("original_s", "original_median_s", "original_peak_rss_mb",
                           "original_rtf")}


def run_isolated(port: str, *, quick: bool = False, module: str | None = None) -> BenchReport:
    """The port's bench run twice in fresh interpreters (port side, then original side), merged
    by case name. A row only one side produced (a port-only case) is kept as it is. ``module``:
    where ``run_bench`` lives (default: the port's harness, ``ports_parity.<port>``)."""
    import subprocess
    import tempfile

    halves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("port", "original"):
            out = os.path.join(tmp, f"{side}.json")
            cmd = [sys.executable, "-m", "ports_parity.common.bench", port, out]
            cmd += ["--module", module] if module else []
            subprocess.run(cmd + (["--quick"] if quick else []), check=True,
                           env={**os.environ, SIDE_ENV: side})
            with open(out) as fh:
                halves[side] = json.load(fh)
    by_name = {r["name"]: dict(r) for r in halves["port"]["cases"]}
    for r in halves["original"]["cases"]:
        row = by_name.setdefault(r["name"], dict(r))
        for k in _SIDE_KEYS["original"]:
            if r.get(k) is not None:
                row[k] = r[k]
    machine = {"port_side": halves["port"]["machine"],
               "original_side": halves["original"]["machine"]}
    machine.update({k: v for k, v in halves["port"]["machine"].items()
                    if k in ("platform", "machine", "processor", "python", "cpu_count")})
    return BenchReport(port, [_finish(r) for r in by_name.values()], machine)


def _main(argv: list[str] | None = None) -> int:
    """One side of :func:`run_isolated`: ``python -m ports_parity.common.bench PORT OUT.json``."""
    import argparse

    from ports_parity import harness

    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--module", help="module holding run_bench (default: the port's harness)")
    a = ap.parse_args(argv)
    timing_side()  # validates the variable before any work
    if a.module:
        import importlib

        bench = importlib.import_module(a.module)
    else:
        bench = harness(a.port)
    report = bench.run_bench(quick=a.quick)
    report.to_json(a.out, plot=False)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
