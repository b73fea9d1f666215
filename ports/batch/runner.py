"""The batch job: plan units, run them on an engine, journal each row as it arrives, write each
source's outputs once all its units are in, then ``results.parquet``.

Resume: every finished row is appended to ``OUT/.ports-batch/journal.jsonl`` (flushed and
fsynced). ``--resume`` replays the journal, skips the units that succeeded, and runs the rest
(failed units are retried). A job killed at any point loses at most the rows in flight; a torn
last line is ignored. Outputs and ``results.parquet`` are written atomically.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ports.common.atomic import atomic_path, write_text

from .inputs import Source
from .tasks import Task, unit_key

STATE_DIR = ".ports-batch"
RESULT_COLUMNS = ("source", "rel", "index", "start_s", "duration_s", "ok", "error", "note",
                  "result")


def error_row(unit: dict, err: BaseException | str) -> dict:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return {**unit, "ok": False, "error": msg, "note": "", "result": ""}


def run_unit(task: Task, unit: dict) -> dict:
    """One row; never raises for the unit's own failure (a bad file must not kill the job)."""
    try:
        result = task.run(unit)
    except Exception as err:  # noqa: BLE001 - reported in the row
        return error_row(unit, err)
    note = ""
    if isinstance(result, dict) and isinstance(result.get("minute"), dict):
        note = result["minute"].get("note", "")
    return {**unit, "ok": True, "error": "", "note": note,
            "result": json.dumps(result, default=float)}


class Journal:
    def __init__(self, out: Path, job: dict, resume: bool):
        self.dir = out / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "journal.jsonl"
        job_path = self.dir / "job.json"
        self.rows: dict[str, dict] = {}
        if resume and job_path.exists():
            old = json.loads(job_path.read_text())
            if old != job:
                raise ValueError(f"--resume: {out} holds a different job ({old}); use another "
                                 "--out or drop --resume")
            if self.path.exists():
                self.rows = self._replay()
        elif self.path.exists():
            self.path.unlink()
        write_text(job_path, json.dumps(job, indent=1))
        self._fh = open(self.path, "a")

    def _replay(self) -> dict[str, dict]:
        rows = {}
        with open(self.path) as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line of a killed job
                rows[r["key"]] = r
        return rows

    def append(self, row: dict) -> None:
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows[row["key"]] = row

    def close(self) -> None:
        self._fh.close()


@dataclass
class Summary:
    sources: int = 0
    units: int = 0
    ran: int = 0               # units run in this invocation
    skipped: int = 0           # units already done (resume)
    failed_units: int = 0
    failed_sources: list = field(default_factory=list)
    seconds: float = 0.0
    audio_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed_sources


Engine = Callable[[Task, list[dict]], Iterable[dict]]


def local_engine(task: Task, units: list[dict], *, progress: bool = True) -> Iterator[dict]:
    """One process, one model, no Ray."""
    from ports.common.progress import progress as bar

    if not units:
        return
    task.load()
    for u in bar(units, desc=f"batch {task.name}", unit="unit", enable=progress):
        yield run_unit(task, u)


def run_job(task: Task, sources: list[Source], out: str | os.PathLike, *,
            engine: Engine | None = None, resume: bool = False,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Summary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    journal = Journal(out, task.describe(), resume)
    summary = Summary(sources=len(sources))
    by_source: dict[str, list[dict]] = {}
    planned: list[dict] = []
    src_of: dict[str, Source] = {}
    for src in sources:
        src_of[src.path] = src
        try:
            units = task.plan(src)
        except Exception as err:  # noqa: BLE001 - the source fails, the job goes on
            units = []
            row = error_row({"key": unit_key(src.path, -1), "source": src.path, "rel": src.rel,
                             "kind": src.kind, "index": -1, "start_s": 0.0, "duration_s": 0.0},
                            err)
            journal.append(row)
            by_source[src.path] = [row]
            continue
        by_source[src.path] = []
        planned += units
    summary.units = len(planned) + sum(1 for r in by_source.values() if r)
    todo = []
    for u in planned:
        done = journal.rows.get(u["key"])
        if resume and done is not None and done.get("ok"):
            by_source[u["source"]].append(done)
            summary.skipped += 1
        else:
            todo.append(u)
    expected = {}
    for u in planned:
        expected[u["source"]] = expected.get(u["source"], 0) + 1
    written: set[str] = set()

    def finish(path: str) -> None:
        rows = sorted(by_source[path], key=lambda r: (r["index"], r["start_s"]))
        if any(not r["ok"] for r in rows):
            return
        src = src_of[path]
        try:
            task.write(src, rows, out)
        except Exception as err:  # noqa: BLE001 - e.g. an HLS stream without any audio
            for r in rows:
                r.update(ok=False, error=f"{type(err).__name__}: {err}")
            return
        written.add(path)

    for path, rows in by_source.items():  # complete from the journal alone
        if expected.get(path) and len(rows) == expected[path]:
            finish(path)
    run = engine or local_engine
    try:
        for row in run(task, todo):
            journal.append(row)
            summary.ran += 1
            rows = by_source[row["source"]]
            rows[:] = [r for r in rows if r["key"] != row["key"]] + [row]
            if len(rows) == expected[row["source"]]:
                finish(row["source"])
    finally:
        journal.close()
    all_rows = sorted((r for rows in by_source.values() for r in rows),
                      key=lambda r: (r["source"], r["start_s"], r["index"]))
    write_results(all_rows, out / "results.parquet")
    for path, rows in by_source.items():
        bad = [r for r in rows if not r["ok"]]
        if bad or (expected.get(path) and path not in written):
            summary.failed_sources.append(path)
            summary.failed_units += len(bad)
            for r in bad[:3]:
                log(f"failed: {path} @ {r['start_s']:.1f} s: {r['error']}")
        elif rows:
            summary.audio_s += sum(r["duration_s"] for r in rows)
    summary.seconds = time.perf_counter() - t0
    return summary


def write_results(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "rel": pa.array([r["rel"] for r in rows], pa.string()),
        "index": pa.array([int(r["index"]) for r in rows], pa.int64()),
        "start_s": pa.array([float(r["start_s"]) for r in rows], pa.float64()),
        "duration_s": pa.array([float(r["duration_s"]) for r in rows], pa.float64()),
        "ok": pa.array([bool(r["ok"]) for r in rows], pa.bool_()),
        "error": pa.array([r["error"] for r in rows], pa.string()),
        "note": pa.array([r.get("note", "") for r in rows], pa.string()),
        "result": pa.array([r["result"] for r in rows], pa.string()),  # JSON per row
    }
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp)


__all__ = ["run_job", "local_engine", "run_unit", "error_row", "Summary", "Journal",
           "write_results", "RESULT_COLUMNS", "STATE_DIR"]
