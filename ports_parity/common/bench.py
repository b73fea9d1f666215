"""Benchmark harness: a port and its original timed alternately in one process, as a ratio.

Timings on a shared or thermally limited machine drift; alternating the two sides per repeat
and reporting ``port_s / original_s`` (min over repeats) keeps the comparison fair.
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


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_case(case: Case) -> dict[str, Any]:
    for _ in range(case.warmup):
        case.port_fn()
        if case.original_fn:
            case.original_fn()
    port_t, orig_t = [], []
    port_peak = orig_peak = 0.0
    for _ in range(case.repeats):
        gc.collect()
        with PeakRSS() as port_rss:
            port_t.append(_time(case.port_fn))
        port_peak = max(port_peak, port_rss.peak_mb)
        if case.original_fn:
            gc.collect()
            with PeakRSS() as orig_rss:
                orig_t.append(_time(case.original_fn))
            orig_peak = max(orig_peak, orig_rss.peak_mb)
    row: dict[str, Any] = {
        "name": case.name,
        "port_s": min(port_t), "port_median_s": statistics.median(port_t),
        "original_s": min(orig_t) if orig_t else None,
        "original_median_s": statistics.median(orig_t) if orig_t else None,
        "ratio": (min(port_t) / min(orig_t)) if orig_t else None,
        "speedup": (min(orig_t) / min(port_t)) if orig_t else None,
        "peak_rss_mb": port_peak, "original_peak_rss_mb": orig_peak or None,
        "repeats": case.repeats,
    }
    row.update(case.meta)
    return row


class BenchReport:
    def __init__(self, port: str, rows: list[dict[str, Any]], machine: dict[str, Any]):
        self.port, self.cases, self.machine = port, rows, machine

    def table(self) -> str:
        hdr = ("case", "port s", "original s", "port/orig", "peak RSS MB")
        rows = [hdr] + [(r["name"], f"{r['port_s']:.4f}",
                         "-" if r["original_s"] is None else f"{r['original_s']:.4f}",
                         "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
                         f"{r['peak_rss_mb']:.0f}") for r in self.cases]
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
        ax.bar(x - 0.2, [r["port_s"] for r in self.cases], 0.4, label=f"{self.port}")
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
    from ports.common.progress import progress as bar

    rows = [run_case(c) for c in bar(cases, desc=f"bench {port}", unit="case", enable=progress)]
    return BenchReport(port, rows, machine_info())
