"""Transcription: openai-whisper's own decoding (``whisper.transcribe`` / ``whisper.decode``)
with the encoder, and by default the decoder, on MAX.

openai-whisper calls ``model.encoder(mel)`` for every 30-s window (and for language
detection); here that attribute is a thin torch module around :class:`MaxAudioEncoder`. With
``decoder="max"`` the model's ``decode``/``logits`` run openai's ``DecodingTask`` over
:class:`~ports.whisper_max.decoder.MaxTextDecoder` (see ``decoder.decode``), so the windowing,
search, temperature fallback, timestamps and language/task handling are the original's. Word
timestamps (cross-attention of the alignment heads) run openai's torch decoder on the same
weights; ``decoder="torch"`` uses it for everything.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ports.common.audio import check_waveform, load_audio, resample
from ports.common.blas import torch_threads
from ports.common.hub import cached_conversion, is_repo_id, resolve_dir

from . import DEFAULT_SOURCE
from . import convert as conv
from . import decoder as decoder_mod
from .config import MODELS, SAMPLE_RATE, WhisperDims
from .model import MaxAudioEncoder, encoder_weights_from_whisper
from .streaming import windowed_log_mel

DECODERS = ("max", "torch")

CONVERTER_TAG = "whisper-openai-sd-v1"  # cached_conversion tag: change it when convert() changes


def _openai_cache() -> Path:
    # Where openai-whisper's load_model downloads to (same rule).
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


# Hugging Face repos holding the released weights (transformers layout) for each model name.
HF_REPOS = {name: f"openai/whisper-{name}" for name in MODELS
            if name not in ("large", "turbo", "large-v1")}
HF_REPOS.update({"large": "openai/whisper-large-v3", "turbo": "openai/whisper-large-v3-turbo",
                 "large-v1": "openai/whisper-large"})
_HF_PATTERNS = ["config.json", "*.safetensors", "model.bin", "tokenizer.json", "vocabulary.*",
                "preprocessor_config.json"]


def resolve_source(source: str | os.PathLike, *, revision: str | None = None,
                   token: str | bool | None = None) -> Path:
    """A model name (tiny.en, base, large-v3, ...), a local checkpoint file/folder, or an HF repo
    id -> a local path that :func:`convert.load_any` reads. A name is openai-whisper's download
    (``~/.cache/whisper/<name>.pt``) when present, else its Hugging Face repo (``HF_REPOS``)."""
    s = str(source)
    p = Path(s).expanduser()
    if p.exists():
        return p
    if s in MODELS:
        pt = _openai_cache() / f"{s}.pt"
        if pt.is_file():
            return pt
        return resolve_dir(HF_REPOS[s], allow_patterns=_HF_PATTERNS, revision=revision,
                           token=token)
    if is_repo_id(s):
        return resolve_dir(s, allow_patterns=_HF_PATTERNS, revision=revision, token=token)
    raise FileNotFoundError(f"Whisper model {s!r}: not a known name ({', '.join(MODELS)}), an "
                            "existing file or folder, or a Hugging Face repo id")


def _weights_file(path: Path) -> Path:
    """The file whose sha256 keys the conversion cache for checkpoint ``path``."""
    if path.is_file():
        return path
    if conv.detect_format(path) == "ct2":
        return path / "model.bin"
    return sorted(path.glob("*.safetensors"))[0]


def _alignment_heads(source: str, path: Path, dims: WhisperDims):
    """openai's alignment-head mask for word timestamps, when the source names it."""
    import torch
    import whisper

    if str(source) in whisper._ALIGNMENT_HEADS:
        return ("dump", whisper._ALIGNMENT_HEADS[str(source)])
    if path.is_dir() and (heads := conv.ct2_alignment_heads(path)):
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        return ("mask", mask)
    return None


class _MaxEncoderModule:
    """Stand-in for ``whisper.model.AudioEncoder`` inside a ``Whisper`` model (built lazily so
    this module imports without torch)."""

    @staticmethod
    def make(encoder: MaxAudioEncoder):
        import torch

        class MaxEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.max_encoder = encoder

            def forward(self, mel: torch.Tensor) -> torch.Tensor:
                feats = self.max_encoder(mel.detach().to("cpu", torch.float32).numpy())
                return torch.from_numpy(feats).to(mel.device)

        return MaxEncoder()


class WhisperMax:
    """Whisper with its audio encoder on MAX and openai-whisper's decoder/decoding."""

    def __init__(self, dims: WhisperDims, state_dict: Mapping[str, np.ndarray], *,
                 alignment_heads=None, name: str | None = None, decoder: str = "max"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        sd = conv.check_whisper(dims, state_dict, "Whisper weights")
        self.dims = dims
        self.name = name
        self.encoder = MaxAudioEncoder(dims, encoder_weights_from_whisper(sd))
        # float32 arrays shared (not copied) by the MAX decoder and the torch decoder
        self._decoder_sd = {k[len("decoder."):]: np.ascontiguousarray(v, np.float32)
                            for k, v in sd.items() if k.startswith("decoder.")}
        self.text_decoder = None
        if decoder == "max":
            self.text_decoder = decoder_mod.MaxTextDecoder(dims, self._decoder_sd)
        self._alignment_heads = alignment_heads
        self._model = None

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_SOURCE, *,
                        revision: str | None = None, token: str | bool | None = None,
                        cache: bool = True, decoder: str = "max") -> "WhisperMax":
        """``source``: a model name (tiny.en ... large-v3, turbo), an HF repo id (transformers or
        CTranslate2 layout), or a local checkpoint (openai ``.pt``, HF folder, CTranslate2 folder,
        converted ``.safetensors``). ``cache``: convert once into
        ``~/.cache/audio-ports/whisper_max`` (keyed by the checkpoint's sha256). ``decoder``:
        ``"max"`` (the MAX graphs) or ``"torch"`` (openai-whisper's own decoder)."""
        path = resolve_source(source, revision=revision, token=token)
        if cache and conv.detect_format(path) != "converted":
            dims, sd = conv.load_converted(cached_conversion(
                _weights_file(path), "whisper_max", CONVERTER_TAG,
                lambda _, dst: conv.convert(path, dst)))
        else:
            dims, sd = conv.load_any(path)
        return cls(dims, sd, alignment_heads=_alignment_heads(str(source), path, dims),
                   name=str(source), decoder=decoder)

    @property
    def model(self):
        """openai ``whisper.model.Whisper`` whose ``encoder`` is the MAX encoder and, with the
        MAX decoder, whose ``decode``/``logits`` run it (its torch decoder then serves word
        timestamps only)."""
        if self._model is None:
            import functools

            import torch
            from whisper.model import Whisper

            m = Whisper(self.dims.to_openai())
            m.encoder = _MaxEncoderModule.make(self.encoder)
            # assign: the torch decoder uses the same arrays as the MAX one (no second copy)
            m.decoder.load_state_dict(
                {k: torch.from_numpy(v) for k, v in self._decoder_sd.items()}, strict=True,
                assign=True)
            if self.text_decoder is not None:
                from . import decoder as dec

                # instance attributes shadow Whisper.decode / Whisper.logits, which
                # whisper.transcribe and detect_language call
                m.decode = functools.partial(dec.decode, m, self.text_decoder)
                m.logits = functools.partial(dec.logits, self.text_decoder)
            if self._alignment_heads is not None:
                kind, val = self._alignment_heads
                if kind == "dump":
                    m.set_alignment_heads(val)
                else:
                    m.register_buffer("alignment_heads", val.to_sparse(), persistent=False)
            self._model = m.eval()
        return self._model

    @property
    def tokenizer(self):
        from whisper.tokenizer import get_tokenizer

        return get_tokenizer(self.dims.is_multilingual, num_languages=self.model.num_languages)

    def embed_audio(self, mel) -> np.ndarray:
        """Encoder features (n_ctx, n_state) or (B, n_ctx, n_state) for log-mel input."""
        return self.encoder(mel)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """openai-whisper's log-mel of one 30-s window (padded/trimmed), (n_mels, 3000)."""
        import torch
        import whisper

        x = whisper.pad_or_trim(torch.from_numpy(np.asarray(audio, np.float32)))
        return whisper.log_mel_spectrogram(x, self.dims.n_mels).numpy()

    def decode(self, features_or_mel, **options):
        """``whisper.decode`` on precomputed MAX features (or on a mel, encoded here)."""
        import torch
        import whisper

        x = np.asarray(features_or_mel, np.float32)
        if x.shape[-2:] != (self.dims.n_audio_ctx, self.dims.n_audio_state):
            x = self.encoder(x)
        options.setdefault("fp16", False)
        return self.model.decode(torch.from_numpy(x), whisper.DecodingOptions(**options))

    def transcribe(self, audio: str | os.PathLike | np.ndarray, *, sr: int | None = None,
                   language: str | None = None, task: str = "transcribe",
                   verbose: bool | None = None, progress: bool | None = None,
                   **kwargs: Any) -> dict:
        """``whisper.transcribe`` with the MAX encoder. ``audio``: a file (any rate, any
        channel count: mixed to mono, resampled to 16 kHz) or a mono float array at ``sr``
        (default 16 kHz). Any length: openai-whisper's 30-s windows, its log-mel computed one
        window at a time (:mod:`.streaming`), so memory beyond the samples does not grow."""
        import whisper

        from ports.common.progress import enabled

        wav = self.load_audio(audio, sr=sr)
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
        if not self.dims.is_multilingual and (task != "transcribe" or
                                              language not in (None, "en", "english", "English")):
            raise ValueError(f"{self.name or 'this model'} is English-only: task 'transcribe' and "
                             f"language 'en' only (got task={task!r}, language={language!r})")
        if verbose is None and (progress if progress is not None else enabled()):
            verbose = False  # openai-whisper shows its tqdm bar only when verbose is False
        kwargs.setdefault("fp16", False)
        # With the MAX decoder torch only does small ops (log-mel, logit filters): at one
        # thread (decoder.TORCH_THREADS) its idle workers leave the cores to MAX's runtime.
        threads = (nullcontext() if self.text_decoder is None
                   else torch_threads(decoder_mod.TORCH_THREADS))
        with windowed_log_mel(), threads:  # the log-mel one window at a time (bounded memory)
            return whisper.transcribe(self.model, wav, language=language, task=task,
                                      verbose=verbose, **kwargs)

    @staticmethod
    def load_audio(audio, *, sr: int | None = None) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike)):
            wav, _ = load_audio(audio, sr=SAMPLE_RATE, channels="mean")
            return np.ascontiguousarray(wav, np.float32)
        x = np.asarray(audio)
        if x.ndim == 2:  # (channels, samples) -> mono, as for files
            x = x.mean(axis=0)
        if x.ndim != 1:
            raise ValueError(f"audio must be a mono (N,) or (channels, N) array, got {x.shape}")
        if x.size == 0:  # nothing to transcribe: openai-whisper returns an empty transcript
            return np.zeros(0, np.float32)
        x = check_waveform(x, "audio")
        if sr is not None and sr != SAMPLE_RATE:
            x = resample(x, sr, SAMPLE_RATE).astype(np.float32)
        return np.ascontiguousarray(x)


def from_pretrained(source: str | os.PathLike = DEFAULT_SOURCE, *, revision: str | None = None,
                    token: str | bool | None = None, cache: bool = True,
                    decoder: str = "max") -> WhisperMax:
    """``WhisperMax`` for ``source`` (see :meth:`WhisperMax.from_pretrained`)."""
    return WhisperMax.from_pretrained(source, revision=revision, token=token, cache=cache,
                                      decoder=decoder)


def transcribe(audio, *, model: str | os.PathLike | WhisperMax = DEFAULT_SOURCE, **kwargs) -> dict:
    """``whisper.transcribe`` of ``audio`` (a file, or a mono array at ``sr=``, default 16 kHz)
    with the MAX encoder. ``model``: a ``WhisperMax`` or a source for :func:`from_pretrained`."""
    m = model if isinstance(model, WhisperMax) else from_pretrained(model)
    return m.transcribe(audio, **kwargs)
