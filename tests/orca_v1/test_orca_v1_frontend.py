"""orca_v1 frontend vs libsndfile, pydub/ffmpeg conversions, torchaudio and the golden data."""
import io
import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from ports.common.audio import AudioError, NonFiniteAudioError, UnsupportedAudioError
from ports.orca_v1 import frontend as F
from ports_parity.orca_v1.parity import (GOLDEN_CROSS_HOST_DB, GOLDEN_FILES, golden_dir, load_golden,
                                         torchaudio_reference_mels)


def _sf_pcm16(v):
    b = io.BytesIO()
    sf.write(b, v, 20000, format="WAV", subtype="PCM_16")
    b.seek(0)
    return sf.read(b, dtype="int16")[0], b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pcm16_formula_equals_libsndfile(dtype):
    rng = np.random.default_rng(1)
    grid = np.arange(-32770, 32771) / 32768.0
    v = np.concatenate([rng.uniform(-1.2, 1.2, 50000), grid, grid + 2.0 ** -32, grid - 2.0 ** -32,
                        grid + 2.0 ** -33, grid - 2.0 ** -33, grid - 1e-12, grid + 1e-12,
                        rng.standard_normal(20000) * 1e-9,
                        [1.0, -1.0, 2.0, -2.0, 1e30, -1e30, 0.0, -0.0, 32767.5 / 32768,
                         -32768.5 / 32768, np.nextafter(1.0, 0), np.nextafter(-1.0, -2)]]).astype(dtype)
    if dtype is np.float32:  # float32 neighbours of every step
        g32 = grid.astype(np.float32)
        v = np.concatenate([v, np.nextafter(g32, np.float32(2)), np.nextafter(g32, np.float32(-2))])
    want, buf = _sf_pcm16(v)
    np.testing.assert_array_equal(F.pcm16_quantize(v), want)
    buf.seek(0)
    back = sf.read(buf, dtype="float32")[0]
    np.testing.assert_array_equal(F.pcm16_roundtrip(v), back)
    # the simpler floor(x * 32768) is not what libsndfile does just below a step
    x = np.float32(-1e-12)
    assert F.pcm16_quantize(np.array([x]))[0] == 0 != math.floor(float(x) * 32768)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_float_wav_conversion_equals_ffmpeg(tmp_path):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-1.1, 1.1, 4000), rng.standard_normal(4000) * 1e-6,
                        [1.0, -1.0, 0.5, 2.0 ** -31, 1.5 * 2.0 ** -31, 2.5 * 2.0 ** -31]]).astype(np.float32)
    src, dst = tmp_path / "f.wav", tmp_path / "s32.wav"
    sf.write(src, x, 22050, subtype="FLOAT")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-acodec", "pcm_s32le", "-f", "wav",
                    str(dst)], check=True)
    ref = sf.read(dst, dtype="float32")[0]
    np.testing.assert_array_equal(F.ffmpeg_float_to_s32(x), ref)


def test_pcm24_widened_like_pydub(tmp_path):
    q = np.array([0, 1, -1, 8388607, -8388608, 123456, -123456], np.int32)
    p = tmp_path / "a24.wav"
    sf.write(p, q << 8, 48000, subtype="PCM_24")
    x = F.read_samples(F.source_info(p))[:, 0]
    wide = np.where(q < 0, (q << 8) | 0xFF, q << 8)  # sign byte below the 3 sample bytes
    np.testing.assert_array_equal(x, wide.astype(np.float32) * np.float32(2.0 ** -31))


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_stage_a_and_b_audio_bit_exact(name):
    g, meta = load_golden(name)
    src = F.source_info(golden_dir() / f"{name}.wav")
    assert src.duration_s == meta["librosa_duration_s"]
    x = F.read_samples(src)
    win = F.stage_a_windows(x, src.samplerate)
    assert [[int(a), int(b)] for a, b in zip(win.starts, win.ends)] == meta["windows_planned"]
    np.testing.assert_array_equal(win.starts, g["starts"])
    np.testing.assert_array_equal(win.ends, g["ends"])
    assert [len(c) for c in win.clips] == [w["clip_frames"] for w in meta["windows"]]
    x20 = F.stage_b_audio(np.stack(win.clips), src.samplerate)
    np.testing.assert_array_equal(F.pcm16_quantize(x20), g["pcm20k"])
    np.testing.assert_array_equal(x20, F.pcm16_to_float(g["pcm20k"]))
    assert (1 + x20.shape[-1] // 256 == g["frames"]).all()


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_mel_equals_torchaudio_on_this_host(name):
    """Pure-torch mel (batched) == the original's torchaudio transforms (per clip), max abs 0.0."""
    g, _ = load_golden(name)
    mel = _feats(name).mels[:, :, :157]  # batched, from the WAV (pcm20k == golden, tested above)
    ref = _torchaudio_ref(name, g)
    assert mel.shape == ref.shape == (len(g["starts"]), 256, 157)
    assert float(np.abs(mel - ref).max()) == 0.0


_REF: dict = {}
_FEATS: dict = {}


def _feats(name):
    if name not in _FEATS:
        _FEATS[name] = F.file_features(golden_dir() / f"{name}.wav")
    return _FEATS[name]


def _torchaudio_ref(name, g):
    if name not in _REF:
        _REF[name] = torchaudio_reference_mels(g["pcm20k"])
    return _REF[name]


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_mels_within_cross_host_rounding(name):
    """The golden mels come from a CPU whose FFT rounds differently: the port must equal the
    original on this host (test above) and stay within the original's own cross-host rounding of
    the golden values; the figure is printed."""
    g, _ = load_golden(name)
    f = _feats(name)
    np.testing.assert_array_equal(f.starts, g["starts"])
    np.testing.assert_array_equal(f.frames, g["frames"])
    assert f.mels.shape == g["mels"].shape and f.mels.dtype == np.float32
    assert (f.mels[:, :, 157:] == 0.0).all() and (g["mels"][:, :, 157:] == 0.0).all()
    d = float(np.abs(f.mels - g["mels"]).max())
    d_orig = float(np.abs(_torchaudio_ref(name, g) - g["mels"][:, :, :157]).max())
    print(f"{name}: max|port - golden| {d:.3g} dB, max|original here - golden| {d_orig:.3g} dB")
    assert d == d_orig  # the port equals the original here, so it is exactly as far
    assert d <= GOLDEN_CROSS_HOST_DB


def test_parity_report_rows_pass():
    """`ports parity orca_v1` (and the demo) states (a), (b), (c) per file, and passes."""
    from ports_parity.orca_v1.parity import run

    rep = run(quick=True)
    print(rep.table())
    rep.assert_passed()
    names = [st.name for st in rep.stages]
    for n in GOLDEN_FILES[1:]:
        assert {f"{n}: stage B mel == original on this host",
                f"{n}: stage C vs golden (cross-host rounding)",
                f"{n}: stage A/B 20 kHz PCM16 == golden"} <= set(names)


def test_stage_c_pad_and_crop():
    m = np.random.default_rng(0).standard_normal((2, 256, 157)).astype(np.float32)
    p = F.stage_c_pad(m)
    assert p.shape == (2, 256, 312)
    np.testing.assert_array_equal(p[:, :, :157], m)
    assert (p[:, :, 157:] == 0.0).all()
    assert F.stage_c_pad(m[:, :, :1].repeat(312, 2)).shape == (2, 256, 312)  # 312 pads nothing
    wide = np.arange(320, dtype=np.float32)[None, None].repeat(256, 1)
    c = F.stage_c_pad(wide)  # 313+ frames: fastai crops randomly; here the centre
    np.testing.assert_array_equal(c[0, 0], np.arange(4, 316, dtype=np.float32))


def test_batched_equals_per_clip_and_downmix_like_original():
    rng = np.random.default_rng(3)
    clips = (rng.standard_normal((5, 44100, 3)) * 0.2).astype(np.float32)
    batched, x20 = F.stage_b_mel(clips, 22050)
    for i in range(5):
        single, s20 = F.stage_b_mel(clips[i:i + 1], 22050)
        np.testing.assert_array_equal(single[0], batched[i])
        # original: torch.mean(torch.from_numpy(data.T), 0) on the (n, C) soundfile array
        mono = torch.mean(torch.from_numpy(clips[i].T), 0, True).numpy()[0]
        np.testing.assert_array_equal(
            F.stage_b_audio(mono[None, :, None], 22050)[0], x20[i])


def test_mel_matches_librosa():
    """Independent check. (On pure tones at a filter edge torchaudio's float32 filterbank is
    ~1.3e-3 dB from librosa's float64 one; broadband hydrophone audio stays below 1e-3.)"""
    import librosa

    g, _ = load_golden("hydro48k_stereo_60s")
    x = F.pcm16_to_float(g["pcm20k"][::15])
    mel = F.stage_b_mel(x[:, :, None], 20000)[0]
    for i in range(len(x)):
        S = librosa.feature.melspectrogram(y=x[i], sr=16000, n_fft=2560,
                                           hop_length=256, center=True, pad_mode="reflect",
                                           power=2.0, n_mels=256, fmin=0.0, fmax=10000.0,
                                           htk=True, norm=None)
        ref = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=100.0)
        assert np.abs(mel[i] - ref).max() <= 1e-3


def test_streaming_reader_equals_whole_read():
    p = golden_dir() / "hydro48k_stereo_60s.wav"
    src = F.source_info(p)
    whole = F.read_samples(src)
    parts = [(off, x) for off, x, _ in F.iter_minutes(p, 7.0)]
    assert [o for o, _ in parts] == [7.0 * k for k in range(len(parts))]
    np.testing.assert_array_equal(np.concatenate([x for _, x in parts]), whole)


def test_window_rule_and_short_input():
    assert len(F.window_bounds(int(59.989 * 48000), 48000)) == 58
    assert len(F.window_bounds(60 * 48000, 48000)) == 59
    assert F.window_bounds(int(1.99 * 16000), 16000) == []
    f = F.features(np.zeros((30000, 2), np.float32), 16000)
    assert f.mels.shape == (0, 256, 312)
    b = F.window_bounds(8 * 44100, 44100)
    assert all(e - s in (88199, 88200, 88201) for *_, s, e in b)


def test_bad_inputs(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="corrupt.wav"):
        F.source_info(bad)
    d = tmp_path / "d.wav"
    sf.write(d, np.zeros(1000), 16000, subtype="DOUBLE")
    with pytest.raises(UnsupportedAudioError, match="64-bit float"):
        F.source_info(d)
    n = tmp_path / "nan.wav"
    sf.write(n, np.array([0.0, np.nan, 0.1] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match="nan.wav"):
        F.read_samples(F.source_info(n))
    with pytest.raises(AudioError):
        F.source_info(tmp_path / "missing.wav")
    u8 = tmp_path / "u8.wav"
    sf.write(u8, np.linspace(-1, 0.99, 48000 * 3), 48000, subtype="PCM_U8")
    assert F.file_features(u8).mels.shape == (2, 256, 312)


def test_upstream_real_audio_tensors_have_stage_c_structure():
    """upstream/*_audio_reference.pt: the fastai tensors of three real-audio windows (no WAV):
    157 data columns, then exact 0.0 dB; per-clip top_db floor; zero filters 238..255 at the
    floor. (Their ``mel_raw``/``stage_b`` come from upstream's own fastai-free port, up to 0.3 dB
    off the fastai tensor, and are not a reference.)"""
    from ports.common.unpickle import restricted_load

    files = sorted((golden_dir() / "upstream").glob("*_audio_reference.pt"))
    assert len(files) == 2
    for f in files:
        for seg in restricted_load(f).values():
            t = seg.get("mel_standardized", seg.get("stage_c"))
            assert t.shape == (1, 256, 312) and t.dtype == np.float32
            data = t[0, :, :157]
            assert (t[0, :, 157:] == 0.0).all() and not (data == 0.0).any()
            floor = data.max() - np.float32(100.0)
            assert data.min() == floor and (data[238:] == floor).all()
            np.testing.assert_array_equal(F.stage_c_pad(data[None]), t)


def test_wavex_float_refused(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, np.zeros((48000, 3), np.float32), 16000, format="WAVEX", subtype="FLOAT")
    with pytest.raises(UnsupportedAudioError, match="EXTENSIBLE"):
        F.source_info(p)
