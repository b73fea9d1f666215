"""Audio input: any file libsndfile reads, to float32, with an explicit channel policy.

Channel policy (``channels=``): ``"mean"`` averages all channels (mono result), ``"first"`` keeps
channel 0, an ``int`` keeps that channel, ``"all"`` returns (C, N). Integer PCM is scaled by
libsndfile to [-1, 1) (int16 / 32768, etc.). Resampling uses ``scipy.signal.resample_poly``.
Paths may be fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...): soundfile reads them through
a buffered file object.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from .remote import INFO_BLOCK, READ_BLOCK, is_url, open_url, stat

Channels = Union[str, int]


class AudioError(ValueError):
    """Base class: the audio input cannot be used (message names the file and the problem)."""


class AudioNotFoundError(AudioError, FileNotFoundError):
    pass


class EmptyAudioError(AudioError):
    pass


class CorruptAudioError(AudioError):
    pass


class NonFiniteAudioError(AudioError):
    pass


class UnsupportedAudioError(AudioError):
    pass


def _sf():
    import soundfile

    return soundfile


@contextlib.contextmanager
def audio_source(path: str | os.PathLike, block_size: int | None = None):
    """What soundfile opens for ``path``: the path itself, or for an fsspec URL a buffered
    file object (range reads: only the bytes soundfile asks for are fetched)."""
    if not is_url(path):
        yield str(path)
        return
    with open_url(path, block_size or READ_BLOCK) as fh:
        yield _NamedFile(fh, path)


class _NamedFile:
    """An fsspec file that soundfile's messages name by its URL (they use ``repr(file)``: an
    object address otherwise, which differs per run and per machine)."""

    def __init__(self, fh, url: str):
        self._fh, self._url = fh, url

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __repr__(self) -> str:
        return repr(self._url)


def _check_exists(path) -> None:
    name = path if is_url(path) else Path(path)
    if is_url(path):
        try:
            st = stat(path)
        except FileNotFoundError:
            raise AudioNotFoundError(f"{name}: no such audio file") from None
        is_dir, size = st.get("type") == "directory", st.get("size")
    else:
        if not name.exists():
            raise AudioNotFoundError(f"{name}: no such audio file")
        is_dir = name.is_dir()
        size = None if is_dir else name.stat().st_size
    if is_dir:
        raise UnsupportedAudioError(f"{name}: is a folder, not an audio file")
    if size == 0:
        raise EmptyAudioError(f"{name}: file is empty (0 bytes)")


def audio_info(path: str | os.PathLike):
    """soundfile's info, with clear errors for missing, empty and unreadable files. ``path`` may
    be an fsspec URL (``ports.common.remote``)."""
    _check_exists(path)
    p = path if is_url(path) else Path(path)
    sf = _sf()
    try:
        with audio_source(p, INFO_BLOCK) as src:
            info = sf.info(src)
    except sf.LibsndfileError as err:
        msg = str(err)
        kind = UnsupportedAudioError if "unknown format" in msg.lower() or \
            "format not recognised" in msg.lower() else CorruptAudioError
        raise kind(f"{p}: not a readable audio file ({msg})") from None
    except RuntimeError as err:
        raise CorruptAudioError(f"{p}: not a readable audio file ({err})") from None
    if info.frames <= 0:
        raise EmptyAudioError(f"{p}: contains no audio samples")
    if info.samplerate <= 0:
        raise CorruptAudioError(f"{p}: invalid sample rate {info.samplerate}")
    return info


def _declared_frames(path, info) -> int | None:
    """Frame count a WAV header declares (libsndfile silently shortens truncated files)."""
    if info.format not in ("WAV", "WAVEX") or not info.subtype.startswith(("PCM", "FLOAT", "DOUBLE")):
        return None
    with audio_source(path, INFO_BLOCK) as src:
        if isinstance(src, str):
            with open(src, "rb") as fh:
                head = fh.read(1 << 16)
        else:
            head = src.read(1 << 16)
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"data":
            frame_bytes = info.channels * np.dtype(_SUBTYPE_BYTES.get(info.subtype, "u1")).itemsize
            if size in (0, 0xFFFFFFFF) or frame_bytes == 0:
                return None  # streaming writers leave the size unset
            return size // frame_bytes
        pos += 8 + size + (size & 1)
    return None


_SUBTYPE_BYTES = {"PCM_U8": "u1", "PCM_S8": "i1", "PCM_16": "i2", "PCM_24": "V3", "PCM_32": "i4",
                  "FLOAT": "f4", "DOUBLE": "f8"}


def check_waveform(x: np.ndarray, name: str = "audio", *, min_samples: int = 1) -> np.ndarray:
    """Raise a clear error for empty or non-finite audio; return float32 data."""
    x = np.asarray(x)
    if x.size == 0 or x.shape[-1] < min_samples:
        raise EmptyAudioError(f"{name}: {x.shape[-1] if x.ndim else 0} samples, at least "
                              f"{min_samples} needed")
    if not np.issubdtype(x.dtype, np.floating):
        raise UnsupportedAudioError(f"{name}: expected floating-point samples, got {x.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = int(np.argmax(bad.reshape(-1)))
        raise NonFiniteAudioError(f"{name}: contains {int(bad.sum())} NaN/Inf samples "
                                  f"(first at flat index {idx})")
    return x.astype(np.float32, copy=False)


def select_channels(x: np.ndarray, channels: Channels, name: str = "audio") -> np.ndarray:
    """(C, N) -> policy result; see module docstring."""
    if channels == "all":
        return x
    if channels == "mean":
        return x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0]
    if channels == "first":
        return x[0]
    if isinstance(channels, int) and not isinstance(channels, bool):
        if not -x.shape[0] <= channels < x.shape[0]:
            raise UnsupportedAudioError(f"{name}: channel {channels} requested, file has "
                                        f"{x.shape[0]}")
        return x[channels]
    raise ValueError(f"channels must be 'mean', 'first', 'all' or an int, got {channels!r}")


def resample(x: np.ndarray, orig_sr: int, new_sr: int, axis: int = -1) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) by the reduced ratio; float32 out."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_sr), int(new_sr))
    return resample_poly(x, new_sr // g, orig_sr // g, axis=axis).astype(np.float32, copy=False)


@functools.lru_cache(16)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
    """torchaudio ``_get_sinc_resample_kernel`` (sinc_interp_hann): ((new, 2*width+orig) float32,
    width) for gcd-reduced rates, computed in float64 like torchaudio; its output-phase offsets
    ``j / new`` are float32 there, so they are rounded the same way here."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None] / orig
    j = (np.arange(0, -new, -1) / new).astype(np.float32).astype(np.float64)[:, None]
    t = np.clip((j + idx) * base, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    return (k * window * (base / orig)).astype(np.float32), width


def sinc_resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """``torchaudio.transforms.Resample(orig_sr, new_sr)`` (windowed sinc, Hann, 6 zero crossings,
    roll-off 0.99) in numpy: (..., N) -> (..., ceil(N * new / orig)) float32.

    For ports whose original resamples with torchaudio (chatterbox's ``embed_ref``): the
    polyphase ``resample`` differs from it by up to ~1.4 dB near the band edge.
    """
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} -> {new_sr}")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == new_sr:
        return x
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _sinc_kernel(orig, new)
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[-1]
    padded = np.pad(flat, [(0, 0), (width, width + orig)]).astype(np.float64)
    win = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1], axis=-1)[:, ::orig]
    y = (win @ kernel.T.astype(np.float64)).reshape(flat.shape[0], -1)[:, : math.ceil(new * n / orig)]
    return y.astype(np.float32).reshape(*x.shape[:-1], -1)


def load_audio(path: str | os.PathLike, *, sr: int | None = None, channels: Channels = "mean",
               start_s: float = 0.0, duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32; returns ``(samples, sample_rate)``.

    ``sr`` resamples when the file's rate differs. ``start_s``/``duration_s`` read a slice.
    ``path`` may be an fsspec URL.
    """
    p = path if is_url(path) else Path(path)
    info = audio_info(p)
    sf = _sf()
    first = int(round(start_s * info.samplerate))
    count = -1 if duration_s is None else int(round(duration_s * info.samplerate))
    try:
        with audio_source(p) as src:
            data, file_sr = sf.read(src, start=first, frames=count, dtype="float32",
                                    always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise CorruptAudioError(f"{p}: reading failed ({err})") from None
    if start_s == 0 and duration_s is None:
        declared = _declared_frames(p, info)
        if declared is not None and data.shape[0] < declared:
            raise CorruptAudioError(f"{p}: truncated: header declares {declared} frames, file "
                                    f"holds {data.shape[0]}")
    x = check_waveform(np.ascontiguousarray(data.T), str(p))
    x = select_channels(x, channels, str(p))
    if sr is not None and sr != file_sr:
        x = resample(x, file_sr, sr)
        file_sr = sr
    return x, int(file_sr)


def iter_blocks(path: str | os.PathLike, block_s: float, *, sr: int | None = None,
                channels: Channels = "mean") -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_seconds, block)`` over a long file with bounded memory.

    With resampling, each block is read with enough context for the polyphase filter and cut on
    sample boundaries that map exactly between the two rates, so the concatenated blocks equal
    resampling the whole file (up to float rounding).
    """
    p = path if is_url(path) else Path(path)
    info = audio_info(p)
    sf = _sf()
    src_sr = info.samplerate
    out_sr = sr or src_sr
    g = math.gcd(src_sr, out_sr)
    up, down = out_sr // g, src_sr // g
    step = max(down, int(round(block_s * src_sr)) // down * down)  # multiple of `down`
    ctx = 0 if up == down else math.ceil(10 * max(up, down) / up / down + 1) * down
    with audio_source(p) as src, sf.SoundFile(src) as fh:
        total = fh.frames
        for start in range(0, total, step):
            lo, hi = max(0, start - ctx), min(total, start + step + ctx)
            fh.seek(lo)
            data = fh.read(hi - lo, dtype="float32", always_2d=True)
            x = check_waveform(np.ascontiguousarray(data.T), f"{p} [{start / src_sr:.1f} s]")
            x = select_channels(x, channels, str(p))
            if up != down:
                y = resample(x, src_sr, out_sr)
                a = (start - lo) * up // down
                n = (min(start + step, total) - start) * up
                y = y[..., a:a + -(-n // down)]
            else:
                y = x[..., start - lo:start - lo + min(step, total - start)]
            yield start / src_sr, y


def write_audio(path: str | os.PathLike, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    """Write (N,) or (C, N) float samples."""
    x = np.asarray(x)
    _sf().write(str(path), x.T if x.ndim == 2 else x, int(sr), subtype=subtype)
    return Path(path)
