"""The Ray engine (``audio-ports[scale]``): Ray Data with a pool of model-holding actors.

Checked against the Ray 2.60 source:
* ``map_batches(CallableClass, compute=ActorPoolStrategy(size=n), fn_constructor_kwargs=...)``
  builds the model once per actor (``concurrency=`` is deprecated).
* Actor pool actors get ``max_restarts=-1`` and ``max_task_retries=-1`` by default
  (``ActorPoolMapOperator._apply_default_remote_args``): a crashed worker is restarted and its
  batch retried. An exception raised by our own code would fail the whole job, so ``run_unit``
  turns it into an error row. ``max_errored_blocks`` (drops blocks silently) is not used.
* Only ``OMP_NUM_THREADS`` is set by Ray; the BLAS/MKL thread variables go through
  ``runtime_env``.
* Rows are units (source, index, offset) as JSON: paths and URLs travel, never models, arrays
  or open files (each actor opens a URL itself). Order is not kept: the driver keys rows and
  sorts when it merges.
"""
from __future__ import annotations

import json
from typing import Iterator

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")


class UnitWorker:
    """One model per actor; each call takes a batch of JSON units and returns JSON rows."""

    def __init__(self, task: str, model: str | None, options: dict, threads: int):
        from .tasks import make_task

        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        self.task = make_task(task, model, options)
        self.task.load()

    def __call__(self, batch):
        import numpy as np

        from .runner import error_row, run_unit

        rows = []
        for s in batch["unit"]:
            unit = json.loads(s)
            try:
                rows.append(json.dumps(run_unit(self.task, unit)))
            except Exception as err:  # noqa: BLE001 - belt and braces: never fail the job
                rows.append(json.dumps(error_row(unit, err)))
        return {"row": np.array(rows, dtype=object)}


def ray_engine_factory(*, address: str | None = None, workers: int | None = None,
                       cpus_per_worker: float = 1.0, threads: int | None = None,
                       task_spec: str | None = None,
                       progress: bool = True, init_kwargs: dict | None = None):
    """An engine for ``run_job``: ``engine(task, units) -> rows`` as they finish."""

    def engine(task, units) -> Iterator[dict]:
        import ray
        from ray.data import ActorPoolStrategy, DataContext

        if not units:
            return
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False)
            kw.update(init_kwargs or {})
            ray.init(address=address, **kw)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # leave a CPU for Ray Data's own tasks on small hosts (ray#44687)
        n = workers or max(1, int((cpus - 1) // cpus_per_worker) if cpus > 1 else 1)
        n = max(1, min(n, len(units)))
        nthreads = threads or max(1, int(cpus_per_worker))
        env = {v: str(nthreads) for v in THREAD_VARS}
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.execution_options.preserve_order = False
        # one unit per block (up to 2000 blocks): a retried block redoes few units
        ds = ray.data.from_items([{"unit": json.dumps(u)} for u in units],
                                 override_num_blocks=min(len(units), 2000))
        ds = ds.map_batches(
            UnitWorker,
            batch_size=1,  # one minute / file per call: a crash retries one unit only
            compute=ActorPoolStrategy(size=n),
            num_cpus=cpus_per_worker,
            fn_constructor_kwargs={"task": task_spec or task.name, "model": str(task.model),
                                   "options": task.options, "threads": nthreads},
            runtime_env={"env_vars": env},
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for s in batch["row"]:
                yield json.loads(s)

    return engine


__all__ = ["UnitWorker", "ray_engine_factory", "THREAD_VARS"]
