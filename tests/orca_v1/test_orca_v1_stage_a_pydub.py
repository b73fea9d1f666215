"""Stage A against the original's own tools: librosa.get_duration + pydub 0.24.1 slicing/export
(fastai_inference.py extract_segments), read back with soundfile like fastai_audio does."""
import io
import math

import librosa
import numpy as np
import pytest
import soundfile as sf
from pydub import AudioSegment

from ports.orca_v1 import frontend as F

CASES = [  # (sample rate, channels, seconds, subtype)
    (44100, 2, 7.3, "PCM_16"),
    (48000, 1, 3.2, "PCM_24"),
    (22050, 1, 3.0, "PCM_U8"),
    (16000, 3, 4.5, "PCM_32"),
    (22050, 1, 3.5, "FLOAT"),   # pydub falls back to ffmpeg (pcm_s32le)
    (8000, 2, 2.0004, "PCM_16"),
]


@pytest.mark.parametrize("sr,ch,sec,subtype", CASES)
def test_stage_a_equals_pydub(tmp_path, sr, ch, sec, subtype):
    rng = np.random.default_rng(sr + ch)
    x = (rng.uniform(-1, 1, (int(sec * sr), ch)) * 0.9).astype(np.float32)
    x[:5] = [[1.0] * ch, [-1.0] * ch, [0.5] * ch, [1e-7] * ch, [-3e-10] * ch]
    p = tmp_path / f"in_{subtype}.wav"
    sf.write(p, x, sr, subtype=subtype)

    L = librosa.get_duration(path=str(p))
    planned = [[i, i + 2] for i in range(int(math.floor(L) - 1))]
    audio = AudioSegment.from_wav(str(p))
    ref = []
    for b, e in planned:
        buf = io.BytesIO()
        audio[b * 1000:e * 1000].export(buf, format="wav")
        buf.seek(0)
        data, rate = sf.read(buf, dtype="float32", always_2d=True)
        assert rate == sr
        ref.append(data)

    src = F.source_info(p)
    assert src.duration_s == L
    win = F.stage_a_windows(F.read_samples(src), src.samplerate)
    assert [[int(a), int(b)] for a, b in zip(win.starts, win.ends)] == planned
    assert len(win) == len(ref) >= 1
    for got, want in zip(win.clips, ref):
        np.testing.assert_array_equal(got, want)
