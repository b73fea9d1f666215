"""OrcaHello v1 constants, as the production fastai v1 + fastai_audio 0.1 path uses them.

Sources: ``InferenceSystem/src/model/fastai_inference.py`` (windows, aggregation) and fastai_audio
0.1 ``AudioConfig``/``SpectrogramConfig`` as production sets them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

HF_REPO = "orcasound/orcahello-srkw-detector-v1"


@dataclass(frozen=True)
class FrontendConfig:
    window_s: int = 2            # Stage A: [i, i+2] s ...
    hop_s: int = 1               # ... for i = 0 .. floor(L) - 2
    resample_to: int = 20000     # fastai_audio resample_to (scipy resample_poly per clip)
    n_fft: int = 2560
    hop_length: int = 256
    n_mels: int = 256
    f_min: float = 0.0
    f_max: float = 10000.0
    # MelSpectrogram is built without sample_rate: torchaudio's default 16000 applies, so the
    # filterbank spans 0..8 kHz of a 20 kHz signal and filters 238..255 are all zero.
    mel_sample_rate: int = 16000
    top_db: float = 100.0
    amin: float = 1e-10
    duration_ms: int = 4000      # fastai_audio duration: pad (zeros-after) or crop to 4 s

    @property
    def crop_width(self) -> int:
        # fastai_audio tfm_crop_time: int(sr * crop_duration / hop)
        return int(self.resample_to * (self.duration_ms / 1000) / self.hop_length)


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 1
    layers: tuple = (3, 4, 6, 3)     # ResNet50 Bottleneck blocks
    head_hidden: int = 512
    num_classes: int = 2
    call_class_index: int = 1        # softmax column of "positive"
    dropout: tuple = (0.25, 0.5)


AGGREGATIONS = ("production", "fastai_unsmoothed", "mean_thresholded", "mean_top_k")


@dataclass(frozen=True)
class DetectConfig:
    threshold: float = 0.5           # local positive: score > threshold
    min_positive: int = 3            # production: minute positive if >= 3 local positives
    aggregation: str = "production"  # one of AGGREGATIONS
    mean_top_k: int = 3              # model_v1 mean_top_k
    global_threshold: float = 0.6    # model_v1: global_prediction = confidence >= this
    minute_s: float | None = 60.0    # live system: one 60-s file per minute; None = whole file
    batch_size: int = 16


@dataclass
class OrcaConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def to_dict(self) -> dict:
        return asdict(self)

