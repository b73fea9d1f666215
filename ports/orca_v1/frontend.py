"""OrcaHello v1 audio frontend, bit-exact with fastai_inference.py + fastai_audio 0.1, in memory.

The original cuts 2-s clips to WAV files with pydub (Stage A), then fastai_audio down-mixes and
resamples each clip through 16-bit PCM WAV caches and computes a torchaudio mel spectrogram in dB
(Stage B), then pads it with 0.0 dB columns to 4 s (Stage C). Here every file round trip is
replaced by the arithmetic it performs, verified against soundfile/libsndfile 1.2.2:

* float -> PCM_16 (libsndfile): ``clip(rint(x * 2**31), -2**31, 2**31 - 1) >> 16`` (scale to
  32 bit with round-to-nearest, then an arithmetic shift; this is floor(x * 32768) except for
  values within 2**-32 below a step), read back as ``int16 / 32768``.
* pydub clip samples: 8/16/32-bit integer PCM unchanged; 24-bit PCM is widened to 32-bit by
  putting a sign byte (0x00 / 0xFF) *below* the 3 bytes, i.e. ``(v << 8) | 0xFF`` for negative
  samples; IEEE float WAVs go through ffmpeg to ``pcm_s32le`` = ``clip(rint(x * 2**31))``.
  64-bit float WAVs make pydub's WAV writer fail ("bad sample width") and are refused here, as
  are WAVE_FORMAT_EXTENSIBLE float files (pydub reads them as integers).
* Other containers libsndfile reads (FLAC, AIFF ...) are treated like a WAV with the same sample
  format (the original accepts WAV only); compressed formats are refused with a clear error.

Mel bits: the mel is computed with the same torch ops as torchaudio (verified equal, max abs 0.0,
on this host). Its last bits depend on the host's FFT/SIMD kernels (MKL, ATen CPU capability), so
the golden data is reproduced bit for bit only where torchaudio itself reproduces it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ports.common.audio import (AudioError, CorruptAudioError, NonFiniteAudioError,
                                UnsupportedAudioError, audio_info, audio_source)

from .config import FrontendConfig

DEFAULT = FrontendConfig()

# ------------------------------------------------------------------ sample conversions
_I32 = 2.0 ** 31


def pcm16_roundtrip(x: np.ndarray) -> np.ndarray:
    """What ``sf.write(..., 'PCM_16')`` then ``sf.read(dtype='float32')`` returns, in memory."""
    s = np.rint(np.asarray(x, dtype=np.float64) * _I32)
    np.clip(s, -_I32, _I32 - 1, out=s)
    q = (s.astype(np.int64) >> 16).astype(np.int16)
    return pcm16_to_float(q)


def pcm16_quantize(x: np.ndarray) -> np.ndarray:
    """The int16 samples libsndfile writes for float input ``x``."""
    s = np.rint(np.asarray(x, dtype=np.float64) * _I32)
    np.clip(s, -_I32, _I32 - 1, out=s)
    return (s.astype(np.int64) >> 16).astype(np.int16)


def pcm16_to_float(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.float32(1.0 / 32768.0)


def ffmpeg_float_to_s32(x: np.ndarray) -> np.ndarray:
    """pydub's ffmpeg path for IEEE-float WAVs: flt -> pcm_s32le (``av_clipl_int32(llrintf(x *
    2**31))``), read back by soundfile as float32 (``float(int32) * 2**-31``)."""
    s = np.rint(np.asarray(x, dtype=np.float32).astype(np.float64) * _I32)
    np.clip(s, -_I32, _I32 - 1, out=s)
    return s.astype(np.int32).astype(np.float32) * np.float32(1.0 / _I32)


# ------------------------------------------------------------------ reading
@dataclass(frozen=True)
class SourceInfo:
    path: str
    samplerate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        # librosa.get_duration(path=...) = frames / samplerate (soundfile)
        return self.frames / self.samplerate


_INT_SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_32")


def source_info(path: str | Path) -> SourceInfo:
    """Validate an input file; errors name the file and the problem."""
    info = audio_info(path)
    sub = info.subtype
    if sub == "DOUBLE":
        raise UnsupportedAudioError(
            f"{path}: 64-bit float audio; the original (pydub) cannot write such clips "
            "('bad sample width'). Convert it to 16-bit PCM or 32-bit float first.")
    if sub == "FLOAT" and info.format == "WAVEX":
        raise UnsupportedAudioError(
            f"{path}: WAVE_FORMAT_EXTENSIBLE float audio; pydub's WAV reader takes it for integer "
            "PCM (the original would score garbage). Convert it to 16-bit PCM first.")
    if sub not in _INT_SUBTYPES + ("PCM_24", "FLOAT"):
        raise UnsupportedAudioError(
            f"{path}: sample format {sub} ({info.format}) is not supported; the original takes "
            "PCM (8/16/24/32-bit) or 32-bit float WAV")
    return SourceInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames),
                      info.format, sub)


def _convert(raw: np.ndarray, subtype: str) -> np.ndarray:
    if subtype == "PCM_24":
        # soundfile int32 = value << 8; pydub's 24->32-bit widening fills the low byte with the
        # sign padding (0xFF for negative samples); libsndfile then reads float(int32) * 2**-31
        v = np.where(raw < 0, raw | 0xFF, raw)
        return v.astype(np.float32) * np.float32(1.0 / _I32)
    if subtype == "FLOAT":
        if not np.isfinite(raw).all():
            raise NonFiniteAudioError("float WAV contains NaN/Inf samples")
        return ffmpeg_float_to_s32(raw)
    return raw  # integer PCM read as float32 by libsndfile, exactly as the clip reads back


def read_samples(src: SourceInfo, start: int = 0, frames: int = -1, sf_file=None) -> np.ndarray:
    """(n, C) float32 samples as pydub's clip WAV reads back through soundfile."""
    import soundfile as sf

    dtype = "int32" if src.subtype == "PCM_24" else "float32"
    try:
        if sf_file is not None:
            sf_file.seek(start)
            raw = sf_file.read(frames, dtype=dtype, always_2d=True)
        else:
            with audio_source(src.path) as f:
                raw, _ = sf.read(f, start=start, frames=frames, dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise CorruptAudioError(f"{src.path}: could not read samples ({err})") from None
    try:
        return _convert(raw, src.subtype)
    except NonFiniteAudioError as err:
        raise NonFiniteAudioError(f"{src.path}: {err}") from None


def iter_minutes(path: str | Path, minute_s: float | None = 60.0
                 ) -> Iterator[tuple[float, np.ndarray, SourceInfo]]:
    """Stream a file as the live system sees it: consecutive ``minute_s`` pieces (one live-system minute each by default) (each treated as
    its own file), bounded memory. ``minute_s=None`` yields the whole file once."""
    import soundfile as sf

    src = source_info(path)
    step = src.frames if minute_s is None else int(round(minute_s * src.samplerate))
    if step <= 0:
        raise ValueError(f"minute_s must be positive, got {minute_s}")
    with audio_source(src.path) as f:
        try:
            fh = sf.SoundFile(f)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise CorruptAudioError(f"{src.path}: not a readable audio file ({err})") from None
        with fh:
            for start in range(0, src.frames, step):
                n = min(step, src.frames - start)
                x = read_samples(src, start, n, sf_file=fh)
                if x.shape[0] != n:
                    raise CorruptAudioError(f"{src.path}: truncated: expected {n} frames at "
                                            f"frame {start}, read {x.shape[0]}")
                yield start / src.samplerate, x, src


# ------------------------------------------------------------------ Stage A
def window_bounds(n_frames: int, sr: int, cfg: FrontendConfig = DEFAULT
                  ) -> list[tuple[int, int, int, int]]:
    """[(start_s, end_s, first_frame, end_frame)] as fastai_inference.py + pydub slice them.

    Windows: ``range(int(floor(L) - 1))`` with L = frames / sr (librosa.get_duration); pydub
    ``audio[b*1000:e*1000]``: ms clamped to ``len(audio)`` = round(1000 * frames / sr), frame
    index ``int(ms * (sr / 1000.0))``.
    """
    L = n_frames / sr
    len_ms = round(1000 * (n_frames / sr))
    out = []
    n_win = int(math.floor(L) - (cfg.window_s - cfg.hop_s))
    for i in range(0, max(n_win, 0) * cfg.hop_s, cfg.hop_s):
        b, e = i, i + cfg.window_s
        f0 = int(min(b * 1000, len_ms) * (sr / 1000.0))
        f1 = int(min(e * 1000, len_ms) * (sr / 1000.0))
        out.append((b, e, f0, f1))  # f1 may pass the end by a frame: pydub pads silence
    return out


@dataclass
class Windows:
    starts: np.ndarray          # int32 (W,) seconds
    ends: np.ndarray            # int32 (W,)
    clips: list[np.ndarray]     # each (n, C) float32 (views into the source samples)

    def __len__(self) -> int:
        return len(self.clips)


def stage_a_windows(samples: np.ndarray, sr: int, cfg: FrontendConfig = DEFAULT) -> Windows:
    """2-s windows with 1-s hop, cut at the source rate. ``samples`` is (n,) or (n, C)."""
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"samples must be (n,) or (n, channels), got shape {x.shape}")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    b = window_bounds(x.shape[0], sr, cfg)
    clips = []
    for _, _, f0, f1 in b:
        c = x[f0:f1]
        if c.shape[0] < f1 - f0:  # pydub fills missing frames (<= 2 ms) with silence
            c = np.concatenate([c, np.zeros((f1 - f0 - c.shape[0], x.shape[1]), x.dtype)])
        clips.append(c)
    return Windows(np.array([w[0] for w in b], np.int32), np.array([w[1] for w in b], np.int32),
                   clips)


# ------------------------------------------------------------------ Stage B
def stage_b_audio(clips: np.ndarray, sr: int, cfg: FrontendConfig = DEFAULT) -> np.ndarray:
    """(B, n, C) float32 clips -> (B, n20) float32 20 kHz signal the mel is computed from.

    fastai_audio: ``torch.mean(sig, 0)`` (sig = soundfile data transposed), PCM_16 cache,
    ``resample_poly(x, 20000/g, sr/g)``, PCM_16 cache.
    """
    import torch
    from scipy.signal import resample_poly

    x = np.ascontiguousarray(clips, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"clips must be (batch, samples, channels), got shape {x.shape}")
    # same reduction as the original: mean over a contiguous channel axis of size C
    mono = torch.mean(torch.from_numpy(x), dim=2).numpy()
    mono = pcm16_roundtrip(mono)
    if sr != cfg.resample_to:
        g = math.gcd(sr, cfg.resample_to)
        mono = resample_poly(mono, int(cfg.resample_to / g), int(sr / g), axis=-1)
    return pcm16_roundtrip(mono)


class MelDB:
    """torchaudio ``MelSpectrogram(**mel_args)`` + ``AmplitudeToDB(top_db)`` restated in torch."""

    def __init__(self, cfg: FrontendConfig = DEFAULT):
        import torch

        self.cfg = cfg
        self.window = torch.hann_window(cfg.n_fft)  # periodic, win_length = n_fft
        self.fb = mel_filterbank(cfg)

    def power_spectrogram(self, x):
        import torch

        spec = torch.stft(x, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
                          win_length=self.cfg.n_fft, window=self.window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True)
        return spec.abs().pow(2.0)

    def mel_power(self, x):
        import torch

        spec = self.power_spectrogram(x)
        # torchaudio MelScale: (..., time, freq) @ (freq, n_mels), one clip at a time: the GEMM
        # result must not depend on how many clips are stacked
        return torch.stack([torch.matmul(s.transpose(-1, -2), self.fb).transpose(-1, -2)
                            for s in spec])

    def to_db(self, mel):
        import torch

        db = 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin))
        # ref_value 1.0 -> db_multiplier log10(1) = 0; top_db floor per clip
        floor = db.amax(dim=(-2, -1), keepdim=True) - self.cfg.top_db
        return torch.max(db, floor)

    def __call__(self, x20: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x20, dtype=np.float32))
            return self.to_db(self.mel_power(t)).numpy()


def mel_filterbank(cfg: FrontendConfig = DEFAULT):
    """torchaudio ``melscale_fbanks`` (htk, norm=None), float32, (n_fft//2+1, n_mels)."""
    import torch

    n_freqs = cfg.n_fft // 2 + 1
    all_freqs = torch.linspace(0, cfg.mel_sample_rate // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + (cfg.f_min / 700.0))
    m_max = 2595.0 * math.log10(1.0 + (cfg.f_max / 700.0))
    m_pts = torch.linspace(m_min, m_max, cfg.n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))


_MEL_CACHE: dict = {}


def _mel(cfg: FrontendConfig) -> MelDB:
    if cfg not in _MEL_CACHE:
        _MEL_CACHE[cfg] = MelDB(cfg)
    return _MEL_CACHE[cfg]


def stage_b_mel(clips: np.ndarray, sr: int, cfg: FrontendConfig = DEFAULT
                ) -> tuple[np.ndarray, np.ndarray]:
    """(B, n, C) clips -> (mel dB (B, n_mels, frames) float32, pcm20k (B, n20) float32)."""
    x20 = stage_b_audio(clips, sr, cfg)
    return _mel(cfg)(x20), x20


# ------------------------------------------------------------------ Stage C
def stage_c_pad(mels: np.ndarray, cfg: FrontendConfig = DEFAULT) -> np.ndarray:
    """fastai_audio ``tfm_crop_time`` with pad_mode "zeros-after": widths <= 312 get 0.0 dB
    columns appended. Wider ones (clips longer than ~4 s, never for 2-s windows) are cropped
    at a random offset in fastai; here deterministically at the centre ((x - 312) // 2)."""
    m = np.asarray(mels, dtype=np.float32)
    width = cfg.crop_width
    x = m.shape[-1]
    total_s = cfg.hop_length * x / cfg.resample_to
    if cfg.duration_ms / 1000 >= total_s:
        out = np.zeros(m.shape[:-1] + (width,), np.float32)
        out[..., :x] = m
        return out
    start = (x - width) // 2
    return np.ascontiguousarray(m[..., start:start + width])


# ------------------------------------------------------------------ all stages
@dataclass
class Features:
    starts: np.ndarray      # int32 (W,)
    ends: np.ndarray        # int32 (W,)
    frames: np.ndarray      # int32 (W,) mel frames before padding
    mels: np.ndarray        # float32 (W, n_mels, 312): the model input per window
    pcm20k: list            # per window float32 20 kHz signal (only when keep_pcm)


def _groups(clips: Sequence[np.ndarray], batch: int):
    """Indices of equal-length clips in batches (odd rates can give lengths differing by 1)."""
    by_len: dict = {}
    for i, c in enumerate(clips):
        by_len.setdefault(c.shape, []).append(i)
    for idx in by_len.values():
        for k in range(0, len(idx), batch):
            yield idx[k:k + batch]


def features(samples: np.ndarray, sr: int, cfg: FrontendConfig = DEFAULT, *,
             batch: int = 64, keep_pcm: bool = False) -> Features:
    """Stages A, B, C for one file's samples ((n,) or (n, C) float32 as soundfile reads them)."""
    x = np.asarray(samples)
    if x.size and not np.isfinite(x).all():
        raise NonFiniteAudioError("audio contains NaN/Inf samples")
    win = stage_a_windows(x, sr, cfg)
    W = len(win)
    mels = np.zeros((W, cfg.n_mels, cfg.crop_width), np.float32)
    frames = np.zeros(W, np.int32)
    pcm: list = [None] * W
    for idx in _groups(win.clips, batch):
        m, x20 = stage_b_mel(np.stack([win.clips[i] for i in idx]), sr, cfg)
        mels[idx] = stage_c_pad(m, cfg)
        frames[idx] = m.shape[-1]
        if keep_pcm:
            for j, i in enumerate(idx):
                pcm[i] = x20[j]
    return Features(win.starts, win.ends, frames, mels, pcm if keep_pcm else [])


def file_features(path: str | Path, cfg: FrontendConfig = DEFAULT, **kw) -> Features:
    """The whole file as one production input (no minute split)."""
    src = source_info(path)
    return features(read_samples(src), src.samplerate, cfg, **kw)


__all__ = ["pcm16_roundtrip", "pcm16_quantize", "pcm16_to_float", "ffmpeg_float_to_s32",
           "SourceInfo", "source_info", "read_samples", "iter_minutes", "window_bounds",
           "Windows", "stage_a_windows", "stage_b_audio", "stage_b_mel", "stage_c_pad",
           "MelDB", "mel_filterbank", "Features", "features", "file_features", "AudioError"]
