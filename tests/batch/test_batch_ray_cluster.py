"""Two simulated Ray nodes (``ray.cluster_utils.Cluster``); the one running actors is removed
mid-run and the job still completes with every row once."""
from __future__ import annotations

import threading
import time

import ray
from ray.cluster_utils import Cluster

from ports.batch.inputs import Source
from ports.batch.ray_engine import ray_engine_factory
from ports.batch.runner import STATE_DIR, run_job
from ports.batch.tasks import make_task


def test_node_removed_mid_run(tmp_path):
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "include_dashboard": False})
    node = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        spec = "ports.batch.testing:SleepTask"
        task = make_task(spec, None, {"units": 6, "sleep_s": 0.5})
        srcs = [Source(str(tmp_path / f"s{i}.wav"), f"s{i}", "audio") for i in range(3)]
        out = tmp_path / "out"
        box = {}

        def job():
            box["summary"] = run_job(task, srcs, out, engine=ray_engine_factory(
                workers=2, task_spec=spec, progress=False))

        th = threading.Thread(target=job)
        th.start()
        journal = out / STATE_DIR / "journal.jsonl"
        t0 = time.time()
        # remove the node once it has finished a unit (on a loaded box the head's actor can
        # take the first rows alone), so "it ran units before it went away" is not a race
        while time.time() - t0 < 120:
            if journal.exists() and node.node_id in journal.read_text():
                break
            time.sleep(0.05)
        cluster.remove_node(node)
        th.join(timeout=240)
        assert not th.is_alive(), "job did not finish after the node was removed"
        s = box["summary"]
        assert s.ok and s.units == 18
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert len(rows) == 18 and len({(r["source"], r["index"]) for r in rows}) == 18
        import json

        nodes = [json.loads(r["result"])["node"] for r in rows]
        assert node.node_id in nodes  # the removed node did run units before it went away
        assert set(nodes) - {node.node_id}  # and the rest ran elsewhere
        for i in range(3):
            assert (out / f"s{i}.json").read_text() == "[0, 1, 2, 3, 4, 5]"
    finally:
        ray.shutdown()
        cluster.shutdown()
