"""What each ``ports batch`` task does with one unit of work, and how a source's rows become the
single-file command's outputs (through that command's own writers).

A unit is a JSON-able dict: ``key, source, rel, kind, index, start_s, duration_s`` plus what the
task needs to find its audio again (paths, never models or arrays: units travel to Ray actors).
``run`` returns the unit's JSON-able result; any exception becomes a failed row.

detect: one unit per minute (the live system's 60-s pieces are independent, so a long file or an
HLS stream spreads over workers). segment and transcribe: one unit per file (their sliding
windows and decoder state cross minute borders; cutting would change the results).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ports.common.atomic import atomic_path

from .inputs import Source

TASKS = ("detect", "segment", "transcribe")


def unit_key(source: str, index: int) -> str:
    return f"{source}#{index}"


def _unit(src: Source, index: int, start_s: float, duration_s: float, **extra) -> dict:
    return {"key": unit_key(src.path, index), "source": src.path, "rel": src.rel,
            "kind": src.kind, "index": index, "start_s": float(start_s),
            "duration_s": float(duration_s), **extra}


class Task:
    name = ""
    default_model = ""
    extensions: tuple = ()

    def __init__(self, model: str | None = None, options: dict | None = None):
        self.model = model or self.default_model
        self.options = dict(options or {})
        self._impl = None

    # driver side
    def plan(self, src: Source) -> list[dict]:
        raise NotImplementedError

    def write(self, src: Source, rows: list[dict], out: Path) -> None:
        raise NotImplementedError

    def outputs(self, src: Source, out: Path) -> list[Path]:
        return [out / f"{src.rel}{e}" for e in self.extensions]

    # worker side
    def load(self) -> None:
        raise NotImplementedError

    def run(self, unit: dict) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"task": self.name, "model": str(self.model), "options": self.options}


# ------------------------------------------------------------------ detect (orca_v1)
class DetectTask(Task):
    name = "detect"
    extensions = (".json",)

    def __init__(self, model=None, options=None):
        from ports.orca_v1.config import HF_REPO

        self.default_model = HF_REPO
        super().__init__(model, options)
        self.options.setdefault("minute_s", 60.0)
        self.options.setdefault("source_guid", "")

    def _cfg(self):
        import dataclasses

        from ports.orca_v1.config import DetectConfig, OrcaConfig

        o = self.options
        det = DetectConfig(threshold=o.get("threshold", 0.5),
                           min_positive=o.get("min_positive", 3),
                           aggregation=o.get("aggregation", "production"),
                           batch_size=o.get("batch_size", DetectConfig.batch_size),
                           minute_s=o["minute_s"])
        return dataclasses.replace(OrcaConfig(), detect=det)

    def plan(self, src: Source) -> list[dict]:
        if src.kind == "hls":
            from ports.common.audio import EmptyAudioError
            from ports.common.hls import parse_playlist

            pl = parse_playlist(src.path)
            groups = pl.minutes(self.options["minute_s"] or 60.0)
            if not groups:
                raise EmptyAudioError(f"{pl.path}: playlist has no segments")
            return [_unit(src, i, g[0].offset_s, sum(s.duration_s for s in g))
                    for i, g in enumerate(groups)]
        from ports.orca_v1.frontend import source_info

        info = source_info(src.path)
        m = self.options["minute_s"]
        step = info.frames if m is None else int(round(m * info.samplerate))
        return [_unit(src, i, start / info.samplerate,
                      min(step, info.frames - start) / info.samplerate,
                      start_frame=start, frames=min(step, info.frames - start),
                      total_frames=info.frames)
                for i, start in enumerate(range(0, info.frames, step))]

    def load(self) -> None:
        from ports.orca_v1.pipeline import OrcaDetector

        self._impl = OrcaDetector.from_pretrained(self.model, cfg=self._cfg())

    def run(self, unit: dict) -> dict:
        det = self._impl
        if unit["kind"] == "hls":
            from ports.common.hls import parse_playlist, read_minute

            m = read_minute(parse_playlist(unit["source"]), unit["index"],
                            self.options["minute_s"] or 60.0)
            res, _ = det.detect_minute(m.samples, m.samplerate, m.offset_s, note=m.note)
            ch = None if m.samples is None else int(m.samples.shape[1])
            return {"minute": res.to_dict(), "samplerate": m.samplerate or None, "channels": ch}
        from ports.common.audio import CorruptAudioError
        from ports.orca_v1.frontend import read_samples, source_info

        src = source_info(unit["source"])
        start, n = unit["start_frame"], unit["frames"]
        x = read_samples(src, start, n)
        if x.shape[0] != n:  # same check as frontend.iter_minutes
            raise CorruptAudioError(f"{src.path}: truncated: expected {n} frames at frame "
                                    f"{start}, read {x.shape[0]}")
        res, _ = det.detect_minute(x, src.samplerate, start / src.samplerate)
        return {"minute": res.to_dict(), "samplerate": src.samplerate, "channels": src.channels}

    def file_result(self, src: Source, rows: list[dict]):
        from ports.orca_v1.decisions import MinuteResult
        from ports.orca_v1.frontend import SourceInfo
        from ports.orca_v1.pipeline import file_result, hls_source_info

        results = [json.loads(r["result"]) for r in rows]
        minutes = [MinuteResult(**r["minute"]) for r in results]
        first = next((r for r in results if r["samplerate"]), None)
        info = None
        if first is not None:
            if src.kind == "hls":
                info = hls_source_info(src.path, first["samplerate"], first["channels"])
            else:
                info = SourceInfo(src.path, first["samplerate"], first["channels"],
                                  rows[0]["total_frames"], "", "")
        return file_result(src.path, info, minutes)

    def write(self, src: Source, rows: list[dict], out: Path) -> None:
        from ports.orca_v1.cli import write_detect_json

        write_detect_json(out / f"{src.rel}.json", [self.file_result(src, rows)],
                          source_guid=self.options["source_guid"])


# ------------------------------------------------------------------ segment (pyannote_mlx)
def _whole_file_unit(src: Source) -> list[dict]:
    from ports.common.audio import audio_info

    info = audio_info(src.path)
    return [_unit(src, 0, 0.0, info.frames / info.samplerate)]


class SegmentTask(Task):
    name = "segment"
    extensions = (".rttm", ".json")

    def __init__(self, model=None, options=None):
        from ports.pyannote_mlx.cli import REPO

        self.default_model = REPO
        super().__init__(model, options)
        self.options.setdefault("batch_size", 32)
        self.options.setdefault("step", None)

    def plan(self, src: Source) -> list[dict]:
        return _whole_file_unit(src)

    def load(self) -> None:
        from ports.pyannote_mlx.pipeline import from_pretrained

        self._impl = from_pretrained(self.model, batch_size=self.options["batch_size"],
                                     step=self.options["step"])

    def run(self, unit: dict) -> dict:
        from ports.pyannote_mlx.cli import rttm_text, segment_document
        from ports.pyannote_mlx.pipeline import segment_file

        seg = segment_file(self._impl, unit["source"])
        regions, doc = segment_document(seg, unit["source"], self.model)
        return {"rttm": rttm_text(Path(unit["source"]).stem, regions), "json": doc}

    def write(self, src: Source, rows: list[dict], out: Path) -> None:
        from ports.common.atomic import write_text
        from ports.pyannote_mlx.cli import segment_json_text

        r = json.loads(rows[0]["result"])
        write_text(out / f"{src.rel}.rttm", r["rttm"])
        write_text(out / f"{src.rel}.json", segment_json_text(r["json"]))


# ------------------------------------------------------------------ transcribe (whisper_max)
class TranscribeTask(Task):
    name = "transcribe"
    default_model = "tiny.en"
    extensions = (".txt", ".srt", ".json")

    def __init__(self, model=None, options=None):
        super().__init__(model, options)
        self.options.setdefault("language", None)

    def plan(self, src: Source) -> list[dict]:
        return _whole_file_unit(src)

    def load(self) -> None:
        from ports.whisper_max.pipeline import WhisperMax

        self._impl = WhisperMax.from_pretrained(self.model)

    def run(self, unit: dict) -> dict:
        from ports.whisper_max.cli import transcribe_options

        return self._impl.transcribe(unit["source"],
                                     **transcribe_options(language=self.options["language"]))

    def write(self, src: Source, rows: list[dict], out: Path) -> None:
        from ports.whisper_max.cli import write_transcript

        result = json.loads(rows[0]["result"])
        dst = out / src.rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        # whisper's writers name files by the audio's stem: write into a private folder, then
        # move each file into place atomically
        tmp = Path(tempfile.mkdtemp(prefix=".transcribe.", dir=dst.parent))
        try:
            for fmt in ("txt", "srt", "json"):
                write_transcript(result, dst.name, tmp, fmt)
                with atomic_path(dst.with_name(f"{dst.name}.{fmt}")) as t:
                    shutil.copyfile(tmp / f"{dst.name}.{fmt}", t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def make_task(name: str, model: str | None = None, options: dict | None = None) -> Task:
    """A task by name, or ``module:Class`` (a Task subclass importable on every worker)."""
    if ":" in name:
        import importlib

        mod, cls = name.split(":", 1)
        return getattr(importlib.import_module(mod), cls)(model, options)
    try:
        cls = {"detect": DetectTask, "segment": SegmentTask, "transcribe": TranscribeTask}[name]
    except KeyError:
        raise ValueError(f"unknown batch task {name!r}; one of {', '.join(TASKS)}") from None
    return cls(model, options)


__all__ = ["TASKS", "Task", "DetectTask", "SegmentTask", "TranscribeTask", "make_task",
           "unit_key"]
