import numpy as np
import pytest
import soundfile as sf

from ports.common import audio as A


def _tone(sr, seconds=0.5, ch=1):
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(ch)])
    return x.astype(np.float32)


@pytest.mark.parametrize("subtype,tol", [("PCM_U8", 1 / 64), ("PCM_16", 1 / 16384), ("PCM_24", 1e-6),
                                         ("PCM_32", 1e-8), ("FLOAT", 0), ("DOUBLE", 0)])
@pytest.mark.parametrize("ch", [1, 2, 6])
def test_bit_depths_and_channels(tmp_path, subtype, tol, ch):
    x = _tone(8000, 0.25, ch)
    p = tmp_path / f"a_{subtype}_{ch}.wav"
    sf.write(p, x.T, 8000, subtype=subtype)
    y, sr = A.load_audio(p, channels="all")
    assert sr == 8000 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=tol + 1e-7)
    m, _ = A.load_audio(p)  # default: mean downmix
    np.testing.assert_allclose(m, y.mean(0), atol=1e-6)
    assert A.load_audio(p, channels="first")[0].shape == (x.shape[1],)
    assert np.array_equal(A.load_audio(p, channels=ch - 1)[0], y[ch - 1])


def test_flac_and_resample(tmp_path):
    x = _tone(48000, 0.5, 2)
    p = tmp_path / "a.flac"
    sf.write(p, x.T, 48000, subtype="PCM_16")
    y, sr = A.load_audio(p, sr=16000)
    assert sr == 16000 and y.shape == (8000,)
    from scipy.signal import resample_poly

    ref = resample_poly(A.load_audio(p)[0], 1, 3)
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_channel_out_of_range(tmp_path):
    p = tmp_path / "s.wav"
    sf.write(p, _tone(8000, 0.1, 2).T, 8000)
    with pytest.raises(A.UnsupportedAudioError, match="channel 5.*2"):
        A.load_audio(p, channels=5)
    with pytest.raises(ValueError, match="channels must be"):
        A.load_audio(p, channels="left")


def test_missing_empty_and_zero_length(tmp_path):
    with pytest.raises(A.AudioNotFoundError, match="no such audio file"):
        A.load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(A.EmptyAudioError, match="0 bytes"):
        A.load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(A.EmptyAudioError, match="no audio samples"):
        A.load_audio(tmp_path / "zero.wav")
    with pytest.raises(A.UnsupportedAudioError, match="folder"):
        A.load_audio(tmp_path)


def test_corrupt_and_unsupported(tmp_path):
    (tmp_path / "text.wav").write_text("this is not audio at all, just text " * 20)
    with pytest.raises(A.AudioError, match="text.wav: not a readable audio file"):
        A.load_audio(tmp_path / "text.wav")
    good = tmp_path / "good.wav"
    sf.write(good, _tone(16000, 1.0).T, 16000, subtype="PCM_16")
    data = good.read_bytes()
    (tmp_path / "trunc.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(A.CorruptAudioError, match="trunc.wav: truncated"):
        A.load_audio(tmp_path / "trunc.wav")
    (tmp_path / "hdr.wav").write_bytes(data[:20])
    with pytest.raises(A.AudioError, match="hdr.wav"):
        A.load_audio(tmp_path / "hdr.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = _tone(8000, 0.1).T.copy()
    x[100, 0] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, x, 8000, subtype="FLOAT")
    with pytest.raises(A.NonFiniteAudioError, match="nan.wav: contains 1 NaN/Inf"):
        A.load_audio(p)


def test_check_waveform():
    with pytest.raises(A.EmptyAudioError):
        A.check_waveform(np.zeros(0, np.float32))
    with pytest.raises(A.EmptyAudioError, match="at least 400"):
        A.check_waveform(np.zeros(10, np.float32), min_samples=400)
    with pytest.raises(A.UnsupportedAudioError):
        A.check_waveform(np.zeros(10, np.int16))


@pytest.mark.parametrize("src_sr,dst_sr", [(48000, 16000), (44100, 16000), (16000, 16000), (22050, 24000)])
def test_iter_blocks_equals_whole_file(tmp_path, src_sr, dst_sr):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, int(src_sr * 3.3)))).astype(np.float32)
    p = tmp_path / "long.wav"
    sf.write(p, x.T, src_sr, subtype="FLOAT")
    whole, _ = A.load_audio(p, sr=dst_sr)
    blocks = list(A.iter_blocks(p, 1.0, sr=dst_sr))
    got = np.concatenate([b for _, b in blocks])
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, atol=1e-6)
    assert blocks[0][0] == 0.0 and abs(blocks[1][0] - 1.0) < 0.01


def test_write_audio_roundtrip(tmp_path):
    x = _tone(16000, 0.2, 2)
    p = A.write_audio(tmp_path / "o.wav", x, 16000, subtype="FLOAT")
    y, sr = A.load_audio(p, channels="all")
    assert sr == 16000 and np.array_equal(y, x)


@pytest.mark.parametrize("rates", [(24000, 16000), (44100, 24000), (16000, 24000), (22050, 16000), (8000, 16000)])
def test_sinc_resample_matches_torchaudio(rates):
    import torch
    import torchaudio  # pure-Python Resample works without its .so files

    a, b = rates
    x = (0.3 * np.random.default_rng(0).standard_normal((2, 12345))).astype(np.float32)
    ref = torchaudio.transforms.Resample(a, b)(torch.from_numpy(x)).numpy()
    out = A.sinc_resample(x, a, b)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)
