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


def _original_shaped_mels(path):
    """fastai_inference.py + fastai_audio 0.1 step by step with the real libraries, files in
    memory: pydub clip -> soundfile float32 -> torch.mean(sig, 0) -> PCM_16 WAV -> resample_poly
    -> PCM_16 WAV -> torchaudio MelSpectrogram + AmplitudeToDB -> zeros-after pad."""
    import warnings

    import torch
    from scipy.signal import resample_poly

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchaudio.transforms import AmplitudeToDB, MelSpectrogram

        ms = MelSpectrogram(f_min=0.0, f_max=10000, hop_length=256, n_fft=2560, n_mels=256,
                            pad=0, win_length=None)
    adb = AmplitudeToDB(top_db=100)

    def wav_roundtrip(sig, sr):  # fastai_inference.py's patched torchaudio.save / load
        b = io.BytesIO()
        data = sig.numpy().T if sig.ndim > 1 else sig.numpy().reshape(-1, 1)
        sf.write(b, data, sr, format="WAV")
        b.seek(0)
        d, r = sf.read(b, dtype="float32")
        return torch.from_numpy(d.T if d.ndim > 1 else d.reshape(1, -1)), r

    L = librosa.get_duration(path=str(path))
    audio = AudioSegment.from_wav(str(path))
    out = []
    for i in range(int(math.floor(L) - 1)):
        buf = io.BytesIO()
        audio[i * 1000:(i + 2) * 1000].export(buf, format="wav")
        buf.seek(0)
        d, sr = sf.read(buf, dtype="float32")
        sig = torch.from_numpy(d.T if d.ndim > 1 else d.reshape(1, -1))
        sig, sr = wav_roundtrip(torch.mean(sig, 0, True), sr)
        if sr != 20000:
            g = math.gcd(sr, 20000)
            sig = torch.from_numpy(resample_poly(sig.numpy(), int(20000 / g), int(sr / g), axis=-1))
        sig, sr = wav_roundtrip(sig, 20000)
        with torch.no_grad():
            m = adb(ms(sig))
        out.append(F.stage_c_pad(m.numpy())[0])
    return np.stack(out)


@pytest.mark.parametrize("sr,ch,sec,subtype", [(44100, 2, 3.4, "PCM_24"), (22050, 1, 3.0, "PCM_U8"),
                                               (16000, 3, 3.0, "FLOAT"), (20000, 2, 3.0, "PCM_16")])
def test_stages_a_to_c_equal_original_shaped_pipeline(tmp_path, sr, ch, sec, subtype):
    rng = np.random.default_rng(7)
    n = int(sec * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 1000 * t)[:, None] + 0.05 * rng.standard_normal((n, ch))
    x[int(1.2 * sr):int(1.6 * sr)] *= 1e-4  # a quiet stretch: quantisation matters
    p = tmp_path / "in.wav"
    sf.write(p, x.astype(np.float32), sr, subtype=subtype)
    ref = _original_shaped_mels(p)
    got = F.file_features(p).mels
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) == 0.0
