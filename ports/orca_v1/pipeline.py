"""OrcaHello v1 detection without fastai: file -> minutes -> windows -> mels -> scores -> decisions.

Files of any length are cut into consecutive 60-s pieces, each handled like one live-system minute
(its own Stage A windows 0..floor(L)-2, its own aggregation). Memory is bounded by one minute.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import HF_REPO, OrcaConfig
from .decisions import Detection, MinuteResult, aggregate, merge_detections
from .frontend import Features, SourceInfo, features, iter_minutes

_WEIGHT_NAMES = ("model.safetensors", "model.pkl", "pytorch_model.bin", "model.pt", "model.pth")


@dataclass
class FileResult:
    path: str
    duration_s: float
    samplerate: int
    channels: int
    minutes: list[MinuteResult]
    detections: list[Detection]
    starts: np.ndarray | None = None     # file-time window starts (s) when mels were kept
    ends: np.ndarray | None = None
    mels: np.ndarray | None = None       # (W, 256, 312) exact model inputs
    note: str = ""

    @property
    def global_prediction(self) -> int:
        return int(any(m.global_prediction for m in self.minutes))

    def to_dict(self) -> dict:
        return {"path": self.path, "duration_s": self.duration_s, "samplerate": self.samplerate,
                "channels": self.channels, "global_prediction": self.global_prediction,
                "note": self.note, "minutes": [m.to_dict() for m in self.minutes],
                "detections": [d.__dict__ for d in self.detections]}


class OrcaDetector:
    def __init__(self, model, cfg: OrcaConfig | None = None, *, device: str = "cpu",
                 channels_last: bool = True, fold_bn: bool = True):
        """``fold_bn``: score with an inference copy whose BatchNorms are folded into the
        convs (fewer passes over the activations; scores within 1e-5 of the plain forward).
        ``self.model`` stays the loaded module."""
        import torch

        from .model import fold_batchnorm

        self.cfg = cfg or OrcaConfig()
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        self.scoring_model = fold_batchnorm(self.model) if fold_bn else self.model
        if channels_last:
            # oneDNN's NHWC convolutions: faster than NCHW on x86 CPUs
            self.scoring_model = self.scoring_model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_state_dict(cls, sd, cfg: OrcaConfig | None = None, **kw) -> "OrcaDetector":
        import torch

        from .convert import to_port
        from .model import OrcaResNet50

        sd = to_port(sd)
        model = OrcaResNet50((cfg or OrcaConfig()).model)
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                              strict=True)
        return cls(model, cfg, **kw)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = HF_REPO, *, revision: str | None = None,
                        token: str | None = None, cache: bool = True,
                        cfg: OrcaConfig | None = None, **kw) -> "OrcaDetector":
        """HF repo id (``model.safetensors``), a folder holding model.safetensors / model.pkl,
        or a checkpoint file (HF/port safetensors, fastai export ``model.pkl``, fastai state
        dict). ``cache``: a pickled checkpoint is converted once into
        ``~/.cache/audio-ports/orca_v1`` (keyed by its sha256) and read from there after."""
        from ports.common.convert import is_safetensors
        from ports.common.hub import ModelSourceError, cached_conversion, resolve_file

        from .convert import CONVERTER_TAG, convert_weights, load_checkpoint

        p = Path(source).expanduser()
        if p.is_dir():
            found = [p / n for n in _WEIGHT_NAMES if (p / n).is_file()]
            if not found:
                raise ModelSourceError(f"{p}: none of {', '.join(_WEIGHT_NAMES)} in this folder")
            path = found[0]
        elif p.is_file():
            path = p
        else:
            path = resolve_file(str(source), "model.safetensors", revision=revision, token=token)
        if cache and not is_safetensors(path):
            path = cached_conversion(path, "orca_v1", CONVERTER_TAG, convert_weights)
        return cls.from_state_dict(load_checkpoint(path), cfg, **kw)

    # ------------------------------------------------------------ scoring
    def scores(self, mels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(W, 256, 312) dB mels -> (W,) softmax[positive], float64 like fastai's ``.item()``."""
        import torch

        bs = batch_size or self.cfg.detect.batch_size
        out = np.zeros(len(mels), np.float64)
        with torch.inference_mode():
            for i in range(0, len(mels), bs):
                x = torch.from_numpy(np.ascontiguousarray(mels[i:i + bs], np.float32))
                x = x.unsqueeze(1).to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.scoring_model(x).float()
                p = torch.softmax(logits, dim=1)[:, self.cfg.model.call_class_index]
                out[i:i + bs] = p.cpu().numpy()
        return out

    # ------------------------------------------------------------ detection
    def detect_samples(self, samples: np.ndarray, sr: int, *, offset_s: float = 0.0,
                       keep_mels: bool = False) -> tuple[MinuteResult, Features]:
        x = np.asarray(samples)
        feats = features(x, sr, self.cfg.frontend)
        s = self.scores(feats.mels) if len(feats.mels) else np.zeros(0)
        res = aggregate(s, feats.starts, self.cfg.detect, offset_s=offset_s,
                        duration_s=x.shape[0] / sr)
        if not keep_mels:
            feats.mels = feats.mels[:0]
        return res, feats

    def detect_file(self, path: str | os.PathLike, *, minute_s: float | None = "default",
                    keep_mels: bool = False, progress: bool = False) -> FileResult:
        """A WAV-like file, or an HLS playlist / folder (``ports.common.hls``: minutes of
        segments as the live system cuts them)."""
        from ports.common.hls import is_hls
        from ports.common.progress import progress as _progress

        if minute_s == "default":
            minute_s = self.cfg.detect.minute_s
        minutes: list[MinuteResult] = []
        starts, ends, mels = [], [], []
        if is_hls(path):
            chunks, info = self._hls_chunks(path, minute_s), None
        else:
            chunks = ((o, x, src, "") for o, x, src in iter_minutes(path, minute_s))
        for off, x, src, note in _progress(chunks, desc=Path(path).name, unit="min") \
                if progress else chunks:
            info = src if src is not None else info
            res, f = self.detect_minute(x, None if src is None else src.samplerate, off,
                                        note=note, keep_mels=keep_mels)
            minutes.append(res)
            if keep_mels and len(f.starts):
                starts.append(f.starts + off)
                ends.append(f.ends + off)
                mels.append(f.mels)
        fr = file_result(path, info, minutes)
        if keep_mels:
            fr.starts = np.concatenate(starts) if starts else np.zeros(0)
            fr.ends = np.concatenate(ends) if ends else np.zeros(0)
            fr.mels = np.concatenate(mels) if mels else np.zeros((0, 256, 312), np.float32)
        return fr

    def detect_minute(self, x: np.ndarray | None, sr: int | None, offset_s: float, *,
                      note: str = "", keep_mels: bool = False
                      ) -> tuple[MinuteResult, Features]:
        """One minute (one unit of batch work). ``x`` None: no audio (HLS minute whose segments
        all failed) -> a minute without prediction carrying ``note``."""
        if x is None:
            res = aggregate(np.zeros(0), [], self.cfg.detect, offset_s=offset_s, duration_s=0.0)
            res.note = note
            return res, Features(np.zeros(0, np.int32), np.zeros(0, np.int32),
                                 np.zeros(0, np.int32), np.zeros((0, 256, 312), np.float32), [])
        res, f = self.detect_samples(x, sr, offset_s=offset_s, keep_mels=keep_mels)
        if note:
            res.note = f"{res.note}; {note}" if res.note else note
        return res, f

    @staticmethod
    def _hls_chunks(path, minute_s):
        from ports.common.hls import iter_minutes as iter_hls_minutes

        for m in iter_hls_minutes(path, 60.0 if minute_s is None else minute_s):
            src = None
            if m.samples is not None:
                src = hls_source_info(path, m.samplerate, m.samples.shape[1])
            yield m.offset_s, m.samples, src, m.note


def hls_source_info(path, samplerate: int, channels: int) -> SourceInfo:
    """An HLS stream described like a file: its declared (#EXTINF) length, 16-bit PCM."""
    from ports.common.hls import parse_playlist

    dur = parse_playlist(path).duration_s
    return SourceInfo(str(path), int(samplerate), int(channels), int(round(dur * samplerate)),
                      "HLS", "PCM_16")


def file_result(path, info: SourceInfo | None, minutes: list[MinuteResult]) -> FileResult:
    """Minutes (in file order) -> the file's result; shared by ``detect_file`` and ``ports
    batch`` so both give the same document."""
    from ports.common.audio import CorruptAudioError

    if info is None:
        raise CorruptAudioError(f"{path}: no decodable audio in any minute")
    note = ""
    if not any(m.starts for m in minutes):
        note = (f"{path}: {info.duration_s:.3f} s is shorter than one 2-s window: "
                "no prediction")
    return FileResult(str(path), info.duration_s, info.samplerate, info.channels, minutes,
                      merge_detections(minutes), note=note)


def from_pretrained(source: str | os.PathLike = HF_REPO, *, revision: str | None = None,
                    token: str | None = None, cache: bool = True, **kw) -> OrcaDetector:
    """``OrcaDetector`` for ``source`` (see :meth:`OrcaDetector.from_pretrained`)."""
    return OrcaDetector.from_pretrained(source, revision=revision, token=token, cache=cache, **kw)


def detect(audio: str | os.PathLike, *, model: str | os.PathLike | OrcaDetector = HF_REPO,
           keep_mels: bool = False, progress: bool = False) -> FileResult:
    """Detect orca calls in an audio file, minute by minute like the live system. ``model``: an
    ``OrcaDetector`` or a source for :func:`from_pretrained`."""
    det = model if isinstance(model, OrcaDetector) else from_pretrained(model)
    return det.detect_file(audio, keep_mels=keep_mels, progress=progress)


__all__ = ["OrcaDetector", "FileResult", "file_result", "hls_source_info", "detect",
           "from_pretrained"]
