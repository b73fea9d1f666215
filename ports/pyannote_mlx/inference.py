"""The segmentation step of ``pyannote.audio.core.inference.Inference`` around the MLX model.

Sliding 10 s windows with a 1 s step (one extra, right-zero-padded chunk when the file does not
end on a step), batches of ``DEFAULT_BATCH_SIZE`` chunks (pyannote: 32), powerset -> multi-label
(one-hot argmax @ mapping). For this permutation-invariant model pyannote skips aggregation and returns the per-chunk (C, 589, 3)
labels; ``vad`` is the VoiceActivityDetection path (max over speakers, Hamming overlap-add,
crop of the padding), ``speaker_count`` the SpeakerDiarization one. The numpy post-processing
repeats pyannote's float operations in the same order, so equal labels give equal results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ports.common.audio import EmptyAudioError, check_waveform

from .config import SegmentationConfig

# Chunks per forward. The MLX LSTM steps pay ~10 us per primitive per step whatever the batch,
# so larger batches amortise them; measured on 2 x86 cores (benchmarks/pyannote_mlx.md): CPU
# time per chunk 138/122/114 ms and MLX peak memory 354/479/671 MiB at 32/64/128 chunks.
DEFAULT_BATCH_SIZE = 128
# With the C++ kernels (the CPU default) per-step costs are gone and small batches win: fresh
# large buffers cost page faults and fall out of cache. 300 s of audio, 2 x86 cores: 7.4-8.3 s at
# 8 chunks, 8.5-9.3 s at 16, 8.8 s at 32, 9.3 s at 128; peak RSS 0.80 GB at 8, 1.55 GB at 128.
NATIVE_BATCH_SIZE = 8


def default_batch_size(model) -> int:
    """``NATIVE_BATCH_SIZE`` where the model's LSTM runs the C++ layer, else
    ``DEFAULT_BATCH_SIZE``."""
    lstm = getattr(model, "lstm", None)
    kind = lstm._kind(NATIVE_BATCH_SIZE) if lstm is not None else None
    return NATIVE_BATCH_SIZE if kind == "native" else DEFAULT_BATCH_SIZE


@dataclass(frozen=True)
class Window:
    """The subset of ``pyannote.core.SlidingWindow`` used here (seconds)."""
    start: float
    duration: float
    step: float

    def closest_frame(self, t: float) -> int:
        return int(np.rint((t - self.start - 0.5 * self.duration) / self.step))

    def segment(self, i: int) -> tuple[float, float]:
        start = self.start + i * self.step
        return start, start + self.duration

    def middle(self, i: int) -> float:
        s, e = self.segment(i)
        return 0.5 * (s + e)

    def crop_loose(self, start: float, end: float, n: int) -> slice:
        """Indices of the frames intersecting [start, end], clipped to [0, n)."""
        i = int(np.ceil((start - self.duration - self.start) / self.step))
        j = int(np.floor((end - self.start) / self.step))
        if j + 1 < 0 or i >= n:
            return slice(0, 0)
        return slice(max(i, 0), min(j + 1, n))


def aggregate(scores: np.ndarray, chunks: Window, frames: Window,
              warm_up: tuple[float, float] = (0.0, 0.0), epsilon: float = 1e-12,
              hamming: bool = False, missing: float = np.nan,
              skip_average: bool = False) -> tuple[np.ndarray, Window]:
    """``Inference.aggregate``: overlap-add of (C, F, K) chunk scores into (T, K) frames."""
    scores = np.array(scores, copy=True)  # pyannote nan_to_num's its input in place
    num_chunks, num_frames_per_chunk, num_classes = scores.shape
    frames = Window(chunks.start, frames.duration, frames.step)
    hamming_window = (np.hamming(num_frames_per_chunk).reshape(-1, 1) if hamming
                      else np.ones((num_frames_per_chunk, 1)))
    warm_up_window = np.ones((num_frames_per_chunk, 1))
    warm_up_left = round(warm_up[0] / chunks.duration * num_frames_per_chunk)
    warm_up_window[:warm_up_left] = epsilon
    warm_up_right = round(warm_up[1] / chunks.duration * num_frames_per_chunk)
    warm_up_window[num_frames_per_chunk - warm_up_right:] = epsilon
    num_frames = frames.closest_frame(chunks.start + chunks.duration
                                      + (num_chunks - 1) * chunks.step
                                      + 0.5 * frames.duration) + 1
    out = np.zeros((num_frames, num_classes), dtype=np.float32)
    count = np.zeros((num_frames, num_classes), dtype=np.float32)
    agg_mask = np.zeros((num_frames, num_classes), dtype=np.float32)
    for c in range(num_chunks):
        score = scores[c]
        mask = 1 - np.isnan(score)
        np.nan_to_num(score, copy=False, nan=0.0)
        chunk_start = chunks.start + c * chunks.step
        s = frames.closest_frame(chunk_start + 0.5 * frames.duration)
        out[s:s + num_frames_per_chunk] += score * mask * hamming_window * warm_up_window
        count[s:s + num_frames_per_chunk] += mask * hamming_window * warm_up_window
        agg_mask[s:s + num_frames_per_chunk] = np.maximum(agg_mask[s:s + num_frames_per_chunk],
                                                          mask)
    average = out if skip_average else out / np.maximum(count, epsilon)
    average[agg_mask == 0.0] = missing
    return average, frames


def trim(scores: np.ndarray, chunks: Window,
         warm_up: tuple[float, float] = (0.1, 0.1)) -> tuple[np.ndarray, Window]:
    """``Inference.trim``: drop the warm-up frames of every chunk."""
    _, num_frames, _ = scores.shape
    left = round(num_frames * warm_up[0])
    right = round(num_frames * warm_up[1])
    return (scores[:, left:num_frames - right],
            Window(chunks.start + warm_up[0] * chunks.duration,
                   (1 - warm_up[0] - warm_up[1]) * chunks.duration, chunks.step))


def binarize_regions(scores: np.ndarray, frames: Window, onset: float = 0.5,
                     offset: float | None = None) -> list[list[tuple[float, float]]]:
    """``pyannote.audio.utils.signal.Binarize`` (no padding, no min durations): per class, the
    (start, end) regions where the score crosses ``onset`` up and ``offset`` down."""
    offset = offset or onset
    num_frames = scores.shape[0]
    t = [frames.middle(i) for i in range(num_frames)]
    regions = []
    for k_scores in scores.T:
        cur: list[tuple[float, float]] = []
        start = t[0]
        active = k_scores[0] > onset
        tt = t[0]
        for tt, y in zip(t[1:], k_scores[1:]):
            if active:
                if y < offset:
                    cur.append((start, tt))
                    start = tt
                    active = False
            elif y > onset:
                start = tt
                active = True
        if active:
            cur.append((start, tt))
        regions.append(cur)
    return regions


@dataclass
class Segmentation:
    """Per-chunk output of the sliding-window inference."""
    multilabel: np.ndarray  # (C, F, num_classes) float32, hard 0/1
    chunks: Window  # chunk i covers [start + i*step, start + i*step + duration]
    frames: Window  # model output frames (pyannote Model.receptive_field)
    num_samples: int
    sample_rate: int
    has_last_chunk: bool
    warm_up: tuple[float, float] = (0.0, 0.0)
    logprobs: np.ndarray | None = None  # (C, F, 7) when kept

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def vad(self) -> tuple[np.ndarray, Window]:
        """VoiceActivityDetection's aggregated speech score: (T, 1) float32 and its frames."""
        scores = np.max(self.multilabel, axis=-1, keepdims=True)
        agg, frames = aggregate(scores, self.chunks, self.frames, warm_up=self.warm_up,
                                hamming=True, missing=0.0)
        if self.has_last_chunk:
            agg = agg[frames.crop_loose(0.0, self.num_samples / self.sample_rate, agg.shape[0])]
        return agg, frames

    def speaker_count(self, warm_up: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, Window]:
        """SpeakerDiarization.speaker_count: (T, 1) uint8 instantaneous number of speakers."""
        trimmed, chunks = trim(self.multilabel, self.chunks, warm_up)
        count, frames = aggregate(np.sum(trimmed, axis=-1, keepdims=True), chunks, self.frames,
                                  hamming=False, missing=0.0, skip_average=False)
        return np.rint(count).astype(np.uint8), frames

    def speech_regions(self, onset: float = 0.5, offset: float | None = None):
        """Binarised VAD: list of (start, end) seconds (powerset models use onset=offset=0.5)."""
        vad, frames = self.vad()
        return binarize_regions(vad, frames, onset, offset)[0]


def iter_windows(blocks: Iterable[np.ndarray], window: int, step: int
                 ) -> Iterator[tuple[np.ndarray, bool]]:
    """Chunks of ``window`` samples every ``step`` from a stream of 1-D blocks, as
    ``waveform.unfold(1, window, step)`` plus pyannote's zero-padded last chunk; yields
    ``(chunk, is_padded_last)``. Memory stays at about one window plus one block."""
    buf = np.zeros(0, np.float32)
    offset = 0  # absolute index of buf[0]
    next_start = 0
    total = 0
    for block in blocks:
        block = np.asarray(block, np.float32).reshape(-1)
        total += block.shape[0]
        buf = np.concatenate([buf, block]) if buf.size else block
        while next_start + window <= total:
            a = next_start - offset
            yield buf[a:a + window], False
            next_start += step
        drop = min(next_start - offset, buf.shape[0])
        if drop > 0:
            buf = buf[drop:]
            offset += drop
    if total == 0:
        return
    if total < window or (total - window) % step > 0:
        last = buf[next_start - offset:]
        yield np.pad(last, (0, window - last.shape[0])), True


class SegmentationInference:
    """pyannote ``Inference(model)`` (sliding window) on an MLX ``PyanNet``."""

    def __init__(self, model, *, step: float | None = None, batch_size: int | None = None,
                 duration: float | None = None):
        self.model = model
        cfg: SegmentationConfig = model.config
        self.config = cfg
        self.duration = duration or cfg.duration
        self.step = step or (0.1 * self.duration if cfg.warm_up[0] == 0.0 else cfg.warm_up[0])
        if self.step > self.duration:
            raise ValueError(f"step {self.step:g}s is longer than the {self.duration:g}s chunks")
        batch_size = default_batch_size(model) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.mapping = cfg.powerset_mapping()

    @property
    def frames(self) -> Window:
        return Window(*self.config.frames)

    def infer(self, chunks: np.ndarray) -> np.ndarray:
        """(b, num_samples) float32 chunks -> (b, F, 7) log-probabilities."""
        from ports.common.blas import import_mlx

        mx = import_mlx()
        x = mx.array(np.ascontiguousarray(chunks, dtype=np.float32))[:, None, :]
        y = self.model(x)
        mx.eval(y)
        return np.array(y)

    def to_multilabel(self, logprobs: np.ndarray) -> np.ndarray:
        """Hard powerset -> multi-label: one-hot(argmax) @ mapping (first max on ties)."""
        return self.mapping[np.argmax(logprobs, axis=-1)]

    def slide_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, *,
                     keep_logprobs: bool = False,
                     hook: Callable[[int, int | None], None] | None = None,
                     total_samples: int | None = None) -> Segmentation:
        if sample_rate != self.config.sample_rate:
            raise ValueError(f"audio must be {self.config.sample_rate} Hz (got {sample_rate}); "
                             "resample it first (the CLI does)")
        window = round(self.duration * sample_rate)
        step = round(self.step * sample_rate)
        total_chunks = None
        if total_samples is not None:
            full = (total_samples - window) // step + 1 if total_samples >= window else 0
            total_chunks = full + int(total_samples < window or (total_samples - window) % step > 0)
        counted = [0]

        def counting(it):
            for b in it:
                b = np.asarray(b)
                counted[0] += b.shape[-1]
                yield b

        labels, logps, batch = [], [], []
        has_last = False
        done = 0

        def flush():
            nonlocal done
            lp = self.infer(np.stack(batch))
            labels.append(self.to_multilabel(lp))
            if keep_logprobs:
                logps.append(lp)
            done += len(batch)
            batch.clear()
            if hook is not None:
                hook(done, total_chunks)

        # pyannote runs the padded last chunk as a batch of its own; every chunk's output is
        # independent of its batch, so here it joins the last batch (a batch-1 forward is the
        # costliest per chunk).
        for chunk, padded in iter_windows(counting(blocks), window, step):
            has_last = has_last or padded
            batch.append(chunk)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        n = counted[0]
        if n == 0:
            raise EmptyAudioError("audio has no samples")
        return Segmentation(
            multilabel=np.concatenate(labels), chunks=Window(0.0, self.duration, self.step),
            frames=self.frames, num_samples=n, sample_rate=sample_rate, has_last_chunk=has_last,
            warm_up=self.config.warm_up, logprobs=np.concatenate(logps) if keep_logprobs else None)

    def __call__(self, waveform: np.ndarray, sample_rate: int = 16000, *,
                 keep_logprobs: bool = False, hook=None) -> Segmentation:
        """``waveform``: (N,) or (1, N) float mono audio at the model's sample rate. Like
        pyannote's ``Inference``, audio shorter than one window (even one sample) becomes a
        single zero-padded chunk."""
        x = np.asarray(waveform)
        if x.ndim == 2:
            if x.shape[0] != 1:
                raise ValueError(f"expected mono (1, N) audio, got shape {x.shape}; downmix first")
            x = x[0]
        if x.ndim != 1:
            raise ValueError(f"expected (N,) or (1, N) audio, got shape {x.shape}")
        x = check_waveform(x, "waveform")
        return self.slide_blocks([x], sample_rate, keep_logprobs=keep_logprobs, hook=hook,
                                 total_samples=x.shape[0])


__all__ = ["Window", "aggregate", "trim", "binarize_regions", "Segmentation", "iter_windows",
           "SegmentationInference"]
