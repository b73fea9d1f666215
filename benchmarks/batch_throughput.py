"""``ports batch detect`` throughput, local engine vs Ray engine, and Ray's memory overhead.

    python benchmarks/batch_throughput.py [--files 4] [--seconds 60] [--workers 1] [--json F]

Generates N synthetic 48 kHz stereo files (random-weight orca model: speed does not depend on
the weights), runs the local engine in this process, then the Ray engine on a fresh local
cluster. Memory: peak summed RSS of this process tree (driver + raylet/GCS/actors) sampled
every 0.2 s, against the local run's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_rss() -> int:
    import psutil

    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class Peak:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss())
            time.sleep(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from ports.batch.inputs import expand
    from ports.batch.ray_engine import ray_engine_factory
    from ports.batch.runner import run_job
    from ports.batch.tasks import DetectTask
    from ports_parity.orca_v1.bench import make_audio
    from ports_parity.orca_v1 import save_random_weights

    d = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    (d / "in").mkdir()
    for i in range(args.files):
        make_audio(d / "in" / f"f{i}.wav", args.seconds, seed=i)
    save_random_weights(d / "w", seed=0)
    srcs = expand([str(d / "in")])
    audio_s = args.files * args.seconds
    res = {"files": args.files, "audio_s": audio_s, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}

    base = tree_rss()
    with Peak() as pk:
        t0 = time.perf_counter()
        s = run_job(DetectTask(str(d / "w")), srcs, d / "out_local")
        res["local_s"] = time.perf_counter() - t0
    assert s.ok
    res["local_rtf"] = res["local_s"] / audio_s
    res["local_peak_rss_mb"] = pk.peak / 2**20
    res["local_base_rss_mb"] = base / 2**20

    import ray

    with Peak() as pk:
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        res["ray_init_s"] = time.perf_counter() - t0
        time.sleep(2)
        res["ray_idle_rss_mb"] = (tree_rss() - base) / 2**20
        t1 = time.perf_counter()
        s = run_job(DetectTask(str(d / "w")), srcs, d / "out_ray",
                    engine=ray_engine_factory(workers=args.workers,
                                              threads=max(1, (os.cpu_count() or 2)
                                                          // args.workers),
                                              cpus_per_worker=1.0, progress=False))
        res["ray_run_s"] = time.perf_counter() - t1
        res["ray_total_s"] = time.perf_counter() - t0
    ray.shutdown()
    assert s.ok
    res["ray_rtf"] = res["ray_run_s"] / audio_s
    res["ray_peak_rss_mb"] = pk.peak / 2**20
    res["ray_workers"] = args.workers
    res["loadavg_end"] = os.getloadavg()
    same = all((d / "out_local" / f"f{i}.json").read_bytes()
               == (d / "out_ray" / f"f{i}.json").read_bytes() for i in range(args.files))
    res["outputs_identical"] = same
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
