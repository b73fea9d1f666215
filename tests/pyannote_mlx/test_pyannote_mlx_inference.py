"""Chunking, windows and bad input of the MLX inference (no torch needed)."""
import numpy as np
import pytest

from ports.common.audio import EmptyAudioError, NonFiniteAudioError
from ports.pyannote_mlx.config import SegmentationConfig
from ports.pyannote_mlx.inference import SegmentationInference, Window, iter_windows


def _unfold_reference(x, window, step):
    """torch ``unfold`` + pyannote's zero-padded last chunk, in numpy."""
    n = x.size
    chunks = []
    num = (n - window) // step + 1 if n >= window else 0
    for c in range(num):
        chunks.append((x[c * step: c * step + window], False))
    if n < window or (n - window) % step > 0:
        last = x[num * step:]
        chunks.append((np.pad(last, (0, window - last.size)), True))
    return chunks


@pytest.mark.parametrize("n", [1, 99, 100, 101, 130, 135, 1000])
@pytest.mark.parametrize("block", [1, 7, 100, 5000])
def test_iter_windows_matches_unfold(n, block):
    x = np.arange(1, n + 1, dtype=np.float32)
    blocks = [x[i:i + block] for i in range(0, n, block)]
    got = list(iter_windows(blocks, 100, 10))
    ref = _unfold_reference(x, 100, 10)
    assert len(got) == len(ref)
    for (a, pa), (b, pb) in zip(got, ref):
        assert pa == pb and np.array_equal(a, b)


def test_window_helpers():
    w = Window(0.0, 991 / 16000, 270 / 16000)
    assert w.closest_frame(1.0 + 0.5 * w.duration) == int(np.rint(1.0 / w.step))
    assert w.crop_loose(0.0, 1.0, 10_000) == slice(0, int(np.floor(1.0 / w.step)) + 1)


@pytest.fixture(scope="module")
def inf():
    from ports.pyannote_mlx.model import PyanNet

    return SegmentationInference(PyanNet(SegmentationConfig()))


def test_nan_audio_is_a_clear_error(inf):
    x = np.zeros(32000, np.float32)
    x[5000] = np.nan
    with pytest.raises(NonFiniteAudioError, match="NaN"):
        inf(x)


def test_empty_and_very_short_audio(inf):
    with pytest.raises(EmptyAudioError):
        inf(np.zeros(0, np.float32))
    # like pyannote's Inference: anything under one window is one zero-padded chunk
    # (against the original: tests/pyannote_mlx/test_pyannote_mlx_real.py)
    for n in (1, 990, 991):
        seg = inf(np.zeros(n, np.float32))
        assert seg.multilabel.shape == (1, 589, 3) and seg.has_last_chunk
        assert seg.vad()[0].shape[0] >= 1


def test_wrong_layout_and_rate(inf):
    with pytest.raises(ValueError, match="mono"):
        inf(np.zeros((2, 32000), np.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        inf(np.zeros(32000, np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="step"):
        SegmentationInference(inf.model, step=11.0)
