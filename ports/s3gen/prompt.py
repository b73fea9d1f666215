"""Validation of the audio S3Gen is given (reference prompt, speech to convert): mono float32,
finite, at least one prompt-mel window long, resampled as chatterbox's ``embed_ref`` does. Used by
the prompt mel, the tokenizer, CAMPPlus and the pipeline."""
from __future__ import annotations

import numpy as np

from ports.common.audio import (EmptyAudioError, UnsupportedAudioError, check_waveform,
                                sinc_resample)

from .config import PromptMelConfig

_MEL = PromptMelConfig()
# Shortest prompt accepted: one full mel window at 24 kHz (80 ms). Shorter audio cannot even be
# reflect-padded by the original (pad 720 needs > 720 samples) and gives a degenerate x-vector.
MIN_PROMPT_S = _MEL.n_fft / _MEL.sampling_rate


def as_mono(wav, name: str = "prompt") -> np.ndarray:
    """float32 mono (N,): (N,), (1, N) or (C, N) channels-first (averaged, as ``load_audio``)."""
    x = np.asarray(wav)
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    elif x.ndim != 1:
        raise UnsupportedAudioError(f"{name}: expected a 1-D waveform or (channels, samples), got "
                                    f"shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UnsupportedAudioError(f"{name}: expected floating-point samples in [-1, 1], got "
                                    f"{x.dtype}")
    return check_waveform(x.astype(np.float32, copy=False), name)


def prompt_audio(wav, sr: int, target_sr: int, name: str = "prompt") -> np.ndarray:
    """Mono float32 prompt at ``target_sr``, resampled as chatterbox's ``embed_ref`` does
    (torchaudio's windowed-sinc ``Resample``, reproduced by ``sinc_resample``).

    Raises ``EmptyAudioError`` when the prompt is shorter than one mel window (80 ms).
    """
    x = as_mono(wav, name)
    if sr <= 0:
        raise ValueError(f"{name}: sample rate must be positive, got {sr}")
    if x.shape[0] < MIN_PROMPT_S * sr:
        raise EmptyAudioError(
            f"{name}: {x.shape[0]} samples at {sr} Hz ({x.shape[0] / sr:.3f} s) is shorter than the "
            f"{MIN_PROMPT_S * 1000:.0f} ms mel window ({_MEL.n_fft} samples at {_MEL.sampling_rate} Hz)")
    return sinc_resample(x, sr, target_sr) if sr != target_sr else x
