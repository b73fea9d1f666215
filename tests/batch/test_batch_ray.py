"""``ports batch`` on Ray (local cluster, 3 CPUs): same bytes as the local engine and the
single-file command, failed rows, a worker that dies on its first call, file:// URL inputs."""
from __future__ import annotations

import json

import pytest
import ray  # the scale extra is part of the test setup (scripts/setup_env.sh)

from ports.batch.inputs import expand
from ports.batch.ray_engine import ray_engine_factory
from ports.batch.runner import STATE_DIR, run_job
from ports.batch.tasks import DetectTask, make_task


def read_rows(out):
    import pyarrow.parquet as pq

    return pq.read_table(out / "results.parquet").to_pylist()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def outputs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and STATE_DIR not in p.parts and p.suffix == ".json"}


@pytest.fixture(scope="module")
def local_run(orca_weights, audio_tree, tmp_path_factory):
    """The local engine with one torch thread, as each Ray actor here (cpus_per_worker=1):
    oneDNN splits reductions by thread, so scores are bit-identical at equal thread counts."""
    import torch

    out = tmp_path_factory.mktemp("local_out")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([str(audio_tree)]),
                out)
    finally:
        torch.set_num_threads(n)
    return out


def test_ray_equals_local(local_ray, orca_weights, audio_tree, local_run, tmp_path):
    out = tmp_path / "ray"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([str(audio_tree)]),
                out, engine=ray_engine_factory(workers=2, progress=False))
    assert s.failed_sources == [str(audio_tree / "bad.wav")]
    assert outputs(out) == outputs(local_run) and len(outputs(out)) == 2
    assert read_rows(out) == read_rows(local_run)  # incl. the failed row and its message


def test_worker_dies_on_first_call(local_ray, orca_weights, audio_tree, local_run, tmp_path):
    marker = tmp_path / "crashed"
    spec = "ports.batch.testing:CrashOnceDetect"
    task = make_task(spec, str(orca_weights), {"minute_s": 10.0, "crash_marker": str(marker)})
    out = tmp_path / "ray"
    s = run_job(task, expand([str(audio_tree)]), out,
                engine=ray_engine_factory(workers=2, task_spec=spec, progress=False))
    assert marker.exists()  # a worker process did die
    rows = read_rows(out)
    assert len({(r["source"], r["index"]) for r in rows}) == len(rows) == 4  # each row once
    assert s.failed_sources == [str(audio_tree / "bad.wav")]
    assert outputs(out) == outputs(local_run)


def test_ray_reads_file_urls(local_ray, orca_weights, audio_tree, local_run, tmp_path):
    """A ``file://`` URL folder: the actors open each URL themselves; the same outputs and rows
    as the local paths, with the URL in their place."""
    url = audio_tree.as_uri()
    out = tmp_path / "ray"
    s = run_job(DetectTask(str(orca_weights), {"minute_s": 10.0}), expand([url]), out,
                engine=ray_engine_factory(workers=2, progress=False))
    assert s.failed_sources == [f"{url}/bad.wav"]
    swap = (str(audio_tree), url)
    assert outputs(out) == {k: v.decode().replace(*swap).encode()
                            for k, v in outputs(local_run).items()} and len(outputs(out)) == 2
    assert read_rows(out) == json.loads(json.dumps(read_rows(local_run)).replace(*swap))
