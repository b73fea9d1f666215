"""Test doubles for ``ports batch`` fault tests; importable on every Ray worker (paths and names
travel, not objects). Never used by the CLI unless named with ``--task-class``."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .tasks import DetectTask, Task, _unit


class CrashOnceDetect(DetectTask):
    """``detect`` whose first call (over all workers) kills its process with ``os._exit``; the
    marker file named by ``options["crash_marker"]`` records that it happened."""

    def run(self, unit: dict) -> dict:
        marker = Path(self.options["crash_marker"])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().run(unit)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(17)


class SleepTask(Task):
    """A cheap stand-in: ``units`` units per source, each sleeping ``sleep_s`` and returning
    where it ran. Writes ``<rel>.json`` with its rows."""

    name = "sleep"
    extensions = (".json",)

    def plan(self, src) -> list[dict]:
        n = int(self.options.get("units", 4))
        return [_unit(src, i, 10.0 * i, 10.0) for i in range(n)]

    def load(self) -> None:
        self._impl = True

    def run(self, unit: dict) -> dict:
        time.sleep(float(self.options.get("sleep_s", 0.2)))
        node = ""
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        return {"pid": os.getpid(), "index": unit["index"], "node": node}

    def write(self, src, rows, out) -> None:
        import json

        from ports.common.atomic import write_text

        write_text(out / f"{src.rel}.json",
                   json.dumps([r["index"] for r in rows]))
