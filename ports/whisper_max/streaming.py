"""openai-whisper's log-mel, computed window by window.

``whisper.transcribe`` computes ``log_mel_spectrogram`` of the whole recording up front: for an
hour that is the STFT of 57.6 M samples (~0.6 GB complex, ~0.3 GB magnitudes) plus a 115 MB
mel, on top of the samples. :class:`LazyLogMel` has the same shape and gives the same values
for any frame range: it keeps the samples only and computes a range when openai's loop slices
it (``mel[:, seek:seek + n]``, ``pad_or_trim``). openai normalises by the recording's global
maximum, so a first pass over 30-s blocks finds that maximum (the same float32 value); each
frame is the same STFT frame (the same reflect padding at the start, zeros at the end), so
memory stays at the samples plus one block's buffers whatever the length.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .config import N_FRAMES

N_FFT, HOP = 400, 160
N_SAMPLES = N_FRAMES * HOP  # openai's 30-s padding
_patch_lock = threading.Lock()


class LazyLogMel:
    """Stand-in for ``log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)`` (n_mels, frames)."""

    def __init__(self, audio: np.ndarray, n_mels: int, padding: int = N_SAMPLES,
                 block: int = N_FRAMES):
        import torch
        from whisper.audio import mel_filters

        self.audio = np.ascontiguousarray(audio, np.float32)
        self.n_mels = n_mels
        self.length = self.audio.shape[0] + padding  # the zero-padded signal openai transforms
        self.n_frames = self.length // HOP  # torch.stft's 1 + L // HOP frames, minus the last
        self._window = torch.hann_window(N_FFT)
        self._filters = mel_filters("cpu", n_mels)
        peak = None
        for a in range(0, self.n_frames, block):
            m = self._log_spec(a, min(a + block, self.n_frames)).max()
            peak = m if peak is None else torch.maximum(peak, m)
        self._floor = peak - 8.0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_mels, self.n_frames)

    def _padded(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) of the signal as torch.stft(center=True) pads it: 200 samples
        reflected at the start, the zero padding (and its reflection) at the end."""
        pad = N_FFT // 2
        idx = np.arange(lo, hi) - pad
        idx = np.abs(idx)  # reflect at the start: x[-j] -> x[j]
        out = np.zeros(hi - lo, np.float32)
        inside = idx < self.audio.shape[0]
        out[inside] = self.audio[idx[inside]]
        return out

    def _log_spec(self, a: int, b: int):
        import torch

        seg = torch.from_numpy(self._padded(a * HOP, (b - 1) * HOP + N_FFT))
        stft = torch.stft(seg, N_FFT, HOP, window=self._window, center=False,
                          return_complex=True)
        magnitudes = stft.abs() ** 2
        return torch.clamp(self._filters @ magnitudes, min=1e-10).log10()

    def window(self, a: int, b: int):
        import torch

        a, b = max(0, a), min(b, self.n_frames)
        if b <= a:
            return torch.zeros((self.n_mels, 0))
        log_spec = torch.maximum(self._log_spec(a, b), self._floor)
        return (log_spec + 4.0) / 4.0

    def __getitem__(self, idx):
        rows, cols = idx
        if rows != slice(None) or not isinstance(cols, slice) or cols.step not in (None, 1):
            raise TypeError(f"LazyLogMel supports mel[:, a:b] only, got {idx!r}")
        a, b, _ = cols.indices(self.n_frames)
        return self.window(a, b)

    def to(self, *args, **kwargs):  # pad_or_trim returns the object itself at exactly 30 s
        return self.window(0, self.n_frames).to(*args, **kwargs)

    def take(self, indices, axis: int = -1):  # whisper.audio.pad_or_trim's non-tensor path
        r = range(indices.start, indices.stop) if isinstance(indices, range) else None
        if axis not in (-1, 1) or r is None or r.step != 1:
            raise TypeError("LazyLogMel.take supports a contiguous frame range only")
        return self.window(r.start, r.stop)


@contextlib.contextmanager
def windowed_log_mel():
    """Within the block, ``whisper.transcribe`` gets a :class:`LazyLogMel` instead of the whole
    recording's log-mel (its other callers are untouched)."""
    import sys

    import whisper  # noqa: F401  (loads whisper.transcribe)

    mod = sys.modules["whisper.transcribe"]
    with _patch_lock:
        saved = mod.log_mel_spectrogram

        def lazy(audio, n_mels=80, padding=0, device=None):
            if device is not None or isinstance(audio, str):
                return saved(audio, n_mels, padding=padding, device=device)
            return LazyLogMel(np.asarray(audio), n_mels, padding)

        mod.log_mel_spectrogram = lazy
        try:
            yield
        finally:
            mod.log_mel_spectrogram = saved
