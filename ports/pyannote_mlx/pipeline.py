"""Loading: ``from_pretrained("pyannote/segmentation-3.0" | path)`` -> ready-to-run inference."""
from __future__ import annotations

import os
from pathlib import Path

from ports.common import hub

from .convert import FORMAT_VERSION, convert, load_weights

from . import DEFAULT_SOURCE

CHECKPOINT = "pytorch_model.bin"


def load_model(source: str | os.PathLike):
    """An MLX ``PyanNet`` from a pyannote checkpoint or safetensors (original or converted).

    Strict: a missing, unexpected or mis-shaped key raises ``ConversionError`` naming it.
    """
    from ports.common.mlx_weights import load_into

    from .model import PyanNet

    weights, cfg = load_weights(source)
    model = PyanNet(cfg)
    load_into(model, weights, what=f"{source}")
    return model.eval()


def resolve(source: str | os.PathLike = DEFAULT_SOURCE, *, revision: str | None = None,
            token: str | bool | None = None, cache: bool = True) -> Path:
    """Local weights file for ``source`` (hub id, folder or file); hub checkpoints are converted
    once into the cache (``~/.cache/audio-ports/pyannote_mlx``)."""
    p = Path(source).expanduser()
    path = hub.resolve_file(source, None if p.is_file() else CHECKPOINT, revision=revision,
                            token=token)
    if cache and path.suffix != ".safetensors":
        path = hub.cached_conversion(path, "pyannote_mlx", f"seg-v{FORMAT_VERSION}",
                                     lambda s, d: convert(s, d))
    return path


def from_pretrained(source: str | os.PathLike = DEFAULT_SOURCE, *, revision: str | None = None,
                    token: str | bool | None = None, cache: bool = True,
                    step: float | None = None, batch_size: int | None = None):
    """``SegmentationInference`` for ``source``: a Hugging Face repo id (default
    ``pyannote/segmentation-3.0``, gated: pass ``token``), a folder or a checkpoint file
    (``pytorch_model.bin`` or converted safetensors). ``cache``: convert a checkpoint once into
    ``~/.cache/audio-ports/pyannote_mlx`` (keyed by its sha256)."""
    from .inference import SegmentationInference

    model = load_model(resolve(source, revision=revision, token=token, cache=cache))
    return SegmentationInference(model, step=step, batch_size=batch_size)


def segment_file(inference, path: str | os.PathLike, *, keep_logprobs: bool = False,
                 block_s: float = 60.0, progress: bool = False):
    """Run ``inference`` on an audio file of any length, rate and channel count.

    The file is streamed in ``block_s`` blocks (downmixed by channel mean, resampled polyphase to
    16 kHz), so memory stays bounded by the per-chunk outputs (~7 KB per second of audio).
    """
    import math

    from ports.common.audio import audio_info, iter_blocks
    from ports.common.progress import progress as pbar

    info = audio_info(path)
    sr = inference.config.sample_rate
    total = math.ceil(info.frames * sr / info.samplerate)
    bar = pbar(total=None, desc="segment", unit="chunk", enable=progress)

    def hook(done, total_chunks):
        bar.total = total_chunks
        bar.n = done
        bar.refresh()

    blocks = (b for _, b in iter_blocks(path, block_s, sr=sr, channels="mean"))
    try:
        return inference.slide_blocks(blocks, sr, keep_logprobs=keep_logprobs, hook=hook,
                                      total_samples=total)
    finally:
        bar.close()


def segment(audio, *, sr: int | None = None, model=DEFAULT_SOURCE, keep_logprobs: bool = False,
            progress: bool = False):
    """Segment ``audio``: a file (any length, rate and channel count; streamed) or a mono float
    array at ``sr`` (default 16 kHz; other rates are resampled). ``model``: a
    ``SegmentationInference`` or a source for :func:`from_pretrained`."""
    from .inference import SegmentationInference

    inference = model if isinstance(model, SegmentationInference) else from_pretrained(model)
    if isinstance(audio, (str, os.PathLike)):
        return segment_file(inference, audio, keep_logprobs=keep_logprobs, progress=progress)
    import numpy as np

    from ports.common.audio import resample

    x = np.asarray(audio, np.float32)
    rate = inference.config.sample_rate
    if sr is not None and sr != rate:
        x = resample(x, sr, rate).astype(np.float32)
    return inference(x, rate, keep_logprobs=keep_logprobs)
