"""The S3Gen bench cases (``ports_parity.s3gen.bench``) timed in CPU seconds, one thread per side.

On a shared, overloaded box wall time mostly measures the scheduler (torch's OpenMP pool spins
while its cores are taken: its flow went from 3 s to 25-100 s). Here each side runs in its own
interpreter with one BLAS/OpenMP thread, and a case's time is the CPU time (user + system) the
process spent on it, which the load changes much less. Usage:

    python -m ports_parity.s3gen.cpu_bench [--full] [--repeats N] [--warmup N] [--only NAME] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _side(side: str, quick: bool, repeats: int, warmup: int, only: str | None = None) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from ports_parity.common import bench as B
    from ports_parity.s3gen import bench as S

    os.environ[B.SIDE_ENV] = side

    def cpu_time(fn):
        t = time.process_time()
        fn()
        return time.process_time() - t

    B._time = cpu_time
    run_cases = S.run_cases

    def with_reps(name, cases):
        cases = [c for c in cases if only is None or only in c.name]
        for c in cases:
            c.repeats, c.warmup = repeats, warmup
        return run_cases(name, cases)

    S.run_cases = with_reps
    return S.run(quick=quick).cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full-size cases (default: --quick's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", help="only the cases whose name contains this (e.g. vocoder)")
    ap.add_argument("--json")
    ap.add_argument("--side", choices=("port", "original"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side:
        print("ROWS " + json.dumps(_side(a.side, not a.full, a.repeats, a.warmup, a.only)))
        return
    rows = {}
    for side in ("port", "original"):
        cmd = [sys.executable, "-m", "ports_parity.s3gen.cpu_bench", "--side", side,
               "--repeats", str(a.repeats), "--warmup", str(a.warmup)] + (["--full"] if a.full else [])
        cmd += ["--only", a.only] if a.only else []
        out = subprocess.run(cmd, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True,
                             check=True).stdout
        rows[side] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("ROWS "))[5:])
    if not rows["port"]:
        sys.exit(f"cpu_bench: no case name contains {a.only!r}")
    merged = []
    for p, o in zip(rows["port"], rows["original"]):
        merged.append({"name": p["name"], "port_cpu_s": p["port_s"], "port_cpu_median_s": p["port_median_s"],
                       "original_cpu_s": o["original_s"], "original_cpu_median_s": o["original_median_s"],
                       "ratio": p["port_s"] / o["original_s"], "repeats": a.repeats, "warmup": a.warmup})
    print(f"{'case':32s} {'port CPU s':>11s} {'orig CPU s':>11s} {'port/orig':>9s}  (min of {a.repeats}, one thread each)")
    for r in merged:
        print(f"{r['name']:32s} {r['port_cpu_s']:11.3f} {r['original_cpu_s']:11.3f} {r['ratio']:9.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": merged, "threads": 1, "clock": "process_time"}, f, indent=1)


if __name__ == "__main__":
    main()
