"""Hyper-parameters of pyannote segmentation-3.0 (``PyanNet``) and its ``Specifications``.

Defaults are the published segmentation-3.0 values; ``SegmentationConfig.from_checkpoint`` reads
them from the Lightning checkpoint's ``hyper_parameters`` and pickled ``Specifications``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any, Mapping

import numpy as np

# SincNet layer geometry (pyannote.audio.models.blocks.sincnet): sinc conv, pool, conv, pool, conv,
# pool. Only the sinc stride is a hyper-parameter.
SINC_FILTERS = 80
SINC_KERNEL = 251
SINC_MIN_LOW_HZ = 50.0
SINC_MIN_BAND_HZ = 50.0
CONV_CHANNELS = 60
CONV_KERNEL = 5
POOL = 3


@dataclass
class SegmentationConfig:
    sample_rate: int = 16000
    num_channels: int = 1
    sinc_stride: int = 10
    lstm_hidden: int = 128
    lstm_layers: int = 4
    lstm_bidirectional: bool = True
    linear_hidden: int = 128
    linear_layers: int = 2
    # Specifications
    duration: float = 10.0
    warm_up: tuple[float, float] = (0.0, 0.0)
    classes: list[str] = field(default_factory=lambda: ["speaker#1", "speaker#2", "speaker#3"])
    powerset_max_classes: int | None = 2
    permutation_invariant: bool = True

    # ---- derived quantities
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def powerset(self) -> bool:
        return self.powerset_max_classes is not None

    @property
    def powerset_classes(self) -> list[tuple[int, ...]]:
        """``{}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}`` order, as pyannote's ``Powerset``."""
        return [c for k in range(self.powerset_max_classes + 1)
                for c in combinations(range(self.num_classes), k)]

    @property
    def dimension(self) -> int:
        return len(self.powerset_classes) if self.powerset else self.num_classes

    def powerset_mapping(self) -> np.ndarray:
        """(num_powerset_classes, num_classes) 0/1 float32 matrix."""
        m = np.zeros((len(self.powerset_classes), self.num_classes), np.float32)
        for i, c in enumerate(self.powerset_classes):
            m[i, list(c)] = 1.0
        return m

    @property
    def lstm_out(self) -> int:
        return self.lstm_hidden * (2 if self.lstm_bidirectional else 1)

    def _layers(self):
        # (kernel, stride) of sinc conv, pool, conv, pool, conv, pool; no padding, no dilation
        s = self.sinc_stride
        return [(SINC_KERNEL, s), (POOL, POOL), (CONV_KERNEL, 1), (POOL, POOL),
                (CONV_KERNEL, 1), (POOL, POOL)]

    def num_frames(self, num_samples: int) -> int:
        n = num_samples
        for k, s in self._layers():
            n = 1 + (n - (k - 1) - 1) // s
        return n

    def receptive_field_size(self, num_frames: int = 1) -> int:
        n = num_frames
        for k, s in reversed(self._layers()):
            n = k + (n - 1) * s
        return n

    def receptive_field_center(self, frame: int = 0) -> int:
        c = frame
        for k, s in reversed(self._layers()):
            c = c * s + (k - 1) // 2
        return c

    @property
    def frames(self) -> tuple[float, float, float]:
        """(start, duration, step) in seconds of the model's output frames
        (pyannote ``Model.receptive_field``)."""
        size = self.receptive_field_size(1)
        step = self.receptive_field_size(2) - size
        start = self.receptive_field_center(0) - (size - 1) / 2
        sr = self.sample_rate
        return start / sr, size / sr, step / sr

    @property
    def window_samples(self) -> int:
        return round(self.duration * self.sample_rate)

    # ---- (de)serialisation
    def to_json(self) -> str:
        d = asdict(self)
        d["warm_up"] = list(self.warm_up)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SegmentationConfig":
        d = json.loads(text)
        d["warm_up"] = tuple(d["warm_up"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_checkpoint(cls, hparams: Mapping[str, Any], specifications: Any) -> "SegmentationConfig":
        """From Lightning ``hyper_parameters`` and a (stubbed) pyannote ``Specifications``."""
        hp = dict(hparams)
        sincnet = dict(hp.get("sincnet") or {})
        lstm = dict(hp.get("lstm") or {})
        linear = dict(hp.get("linear") or {})
        if not lstm.get("monolithic", True):
            raise NotImplementedError("only monolithic LSTM checkpoints (segmentation-3.0) are supported")
        # PyanNet's defaults (applied by merge_dict) for anything the checkpoint leaves out
        cfg = cls(
            sample_rate=int(hp.get("sample_rate", 16000)),
            num_channels=int(hp.get("num_channels", 1)),
            sinc_stride=int(sincnet.get("stride", 10)),
            lstm_hidden=int(lstm.get("hidden_size", 128)),
            lstm_layers=int(lstm.get("num_layers", 2)),
            lstm_bidirectional=bool(lstm.get("bidirectional", True)),
            linear_hidden=int(linear.get("hidden_size", 128)),
            linear_layers=int(linear.get("num_layers", 2)),
        )
        if cfg.sample_rate != 16000:
            raise ValueError(f"SincNet only supports 16 kHz, checkpoint says {cfg.sample_rate}")
        if cfg.num_channels != 1:
            raise ValueError(f"only mono models are supported, checkpoint says {cfg.num_channels}")
        if specifications is not None:
            spec = vars(specifications) if not isinstance(specifications, Mapping) else specifications
            problem = spec.get("problem")
            problem_value = getattr(problem, "_args", (problem,))[0] if problem is not None else None
            if problem_value is not None and problem_value != 1:
                raise NotImplementedError(
                    f"only MONO_LABEL_CLASSIFICATION (powerset) models are supported, "
                    f"checkpoint problem={problem_value}")
            resolution = spec.get("resolution")
            res_value = getattr(resolution, "_args", (resolution,))[0] if resolution is not None else None
            if res_value is not None and res_value != 1:
                raise NotImplementedError("only frame-resolution models are supported")
            cfg.duration = float(spec["duration"])
            cfg.warm_up = tuple(float(w) for w in (spec.get("warm_up") or (0.0, 0.0)))
            cfg.classes = [str(c) for c in spec["classes"]]
            pmc = spec.get("powerset_max_classes")
            cfg.powerset_max_classes = None if pmc is None else int(pmc)
            cfg.permutation_invariant = bool(spec.get("permutation_invariant", False))
            if not cfg.powerset:
                raise NotImplementedError("only powerset checkpoints are supported")
        return cfg
