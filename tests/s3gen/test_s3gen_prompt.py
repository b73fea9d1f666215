"""S3Gen reference-prompt path (24 kHz prompt mel, CAMPPlus x-vector with its Kaldi fbank,
S3TokenizerV2 speech tokens) against the installed chatterbox 0.1.7 / s3tokenizer 0.3.0.

Random seeded weights with the real hyper-parameters: chatterbox's own ``CAMPPlus`` and
``S3Tokenizer`` modules (BatchNorm statistics and LayerNorm affine parameters randomised too, so
train/eval-mode mix-ups and dropped parameters show), loaded into the port through its rules with
the strict ``KeyMap``. Inputs: espeak-ng speech, <= 1 s and 3 s.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ports.common.audio import (EmptyAudioError, NonFiniteAudioError, UnsupportedAudioError,
                                sinc_resample)
from ports.common.convert import ConversionError
from ports_parity.common.parity import ParityReport
from ports.common.samples import espeak

from ports.common.blas import import_mlx  # noqa: E402  (optimized BLAS before mlx)

mx = import_mlx()

from ports.s3gen import campplus as C  # noqa: E402
from ports.s3gen import mel as M  # noqa: E402
from ports.s3gen import prompt as P  # noqa: E402
from ports.s3gen import tokenizer as T  # noqa: E402
from ports.s3gen.config import TokenizerConfig  # noqa: E402


def _speech(sr, seconds):
    if seconds <= 1.0:
        w = espeak("Hello there.", sr=sr, speed=190)
    else:
        w = espeak("The quick brown fox jumps over the lazy dog.", sr=sr)
    n = int(seconds * sr)
    assert w.shape[0] >= n * 0.9, w.shape
    return np.ascontiguousarray(w[:n])


PROMPTS = {"1s": 1.0, "3s": 3.0}


@pytest.fixture(scope="module")
def wav16():
    return {k: _speech(16000, s) for k, s in PROMPTS.items()}


@pytest.fixture(scope="module")
def wav24():
    return {k: _speech(24000, s) for k, s in PROMPTS.items()}


def _randomise(sd, seed):
    """Random but sane normalisation parameters: running stats, affine weights and biases."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1 and k.endswith("weight"):
            v = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1 and k.endswith("bias"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def campplus_pair():
    from chatterbox.models.s3gen.xvector import CAMPPlus as TorchCAMPPlus

    torch.manual_seed(0)
    ref = TorchCAMPPlus(memory_efficient=False)
    ref.load_state_dict(_randomise(ref.state_dict(), 1))
    ref.eval()
    port = C.CAMPPlus()
    C.load_campplus_state_dict(port, {"speaker_encoder." + k: v.numpy()
                                      for k, v in ref.state_dict().items()})
    return ref, port


@pytest.fixture(scope="module")
def tokenizer_pair():
    from chatterbox.models.s3tokenizer import S3Tokenizer

    torch.manual_seed(0)
    ref = S3Tokenizer("speech_tokenizer_v2_25hz")
    sd = {k: v for k, v in _randomise(ref.state_dict(), 2).items()}
    ref.load_state_dict(sd)
    ref.eval()
    port = T.S3TokenizerV2()
    T.load_tokenizer_state_dict(port, {"tokenizer." + k: v.numpy() for k, v in sd.items()})
    return ref, port


# ------------------------------------------------------------------ front ends
def test_mel_filters_equal_librosa_and_chatterbox_buffers(tokenizer_pair):
    import librosa

    ref, _ = tokenizer_pair
    for sr, n_fft, n_mels, fmin, fmax in [(24000, 1920, 80, 0, 8000), (16000, 400, 128, 0.0, None)]:
        ours = M.slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax)
        theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(M.slaney_mel_filters(16000, 400, 128), ref._mel_filters.numpy())
    np.testing.assert_allclose(M.hann_window(400), ref.window.numpy(), atol=3e-7)
    np.testing.assert_allclose(M.hann_window(1920), torch.hann_window(1920).numpy(), atol=3e-7)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompt_mel_matches_chatterbox(wav24, name):
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram

    w = wav24[name]
    ref = mel_spectrogram(torch.from_numpy(w)[None]).numpy()
    ours = M.mel_spectrogram(w)
    rep = ParityReport("s3gen-prompt")
    # torch evaluates the STFT/mel in float32: measured 7e-5 against the float64 evaluation of the
    # same formula (which the port reproduces to 5e-7), in the quietest bins
    rep.compare(f"prompt mel {name}", ours, ref, max_abs=1e-4)
    rep.check("frames", ours.shape == ref.shape, f"{ours.shape} vs {ref.shape}")
    print(rep.table())
    rep.assert_passed()
    pm = M.prompt_mel(w, 24000)
    assert pm.shape == (1, ref.shape[2], 80)


def test_kaldi_mel_banks_match_torchaudio():
    from torchaudio.compliance.kaldi import get_mel_banks

    ours = C.kaldi_mel_banks()
    assert ours.shape == (80, 257) and not ours[:, 256].any()
    args = (80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exact = get_mel_banks(*args)[0].numpy()
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_allclose(ours[:, :256], exact, atol=1e-12, rtol=0)
    # what chatterbox actually uses: torchaudio builds the triangles in float32, with torch's
    # float32 log ((mel - left) / (center - left) near 2000 mel): 1.4e-5 off the exact formula
    ref = get_mel_banks(*args)[0].numpy()
    np.testing.assert_allclose(ours[:, :256], ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_kaldi_fbank_matches_torchaudio(wav16, name):
    import torchaudio.compliance.kaldi as kaldi

    w = wav16[name]
    ours = C.kaldi_fbank(w)
    ref32 = kaldi.fbank(torch.from_numpy(w)[None], num_mel_bins=80).numpy()
    # torchaudio on a float64 waveform: float64 everywhere except its float32 triangles
    ref64 = kaldi.fbank(torch.from_numpy(w).double()[None], num_mel_bins=80).numpy()
    banks32 = kaldi.get_mel_banks(80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)[0].double()
    banks32 = torch.nn.functional.pad(banks32, (0, 1)).numpy()
    rep = ParityReport("s3gen-prompt")
    rep.check("frames", ours.shape == ref32.shape, f"{ours.shape} vs {ref32.shape}")
    rep.compare(f"fbank {name}, torchaudio's triangles, vs torch f64",
                C.kaldi_fbank(w, banks=banks32), ref64, max_abs=1e-5)
    # end to end the differences are torch's float32 FFT/power and float32 triangles, both
    # largest in bins near the eps floor (log 1.2e-7 = -15.9): measured 2.6e-4 max, 4e-6 mean
    rep.compare(f"fbank {name} vs torch f32", ours, ref32, max_abs=5e-4, mean_abs=1e-5)
    from chatterbox.models.s3gen.xvector import extract_feature

    feats, _, _ = extract_feature(torch.from_numpy(w)[None])
    rep.compare(f"fbank - mean {name}", C.extract_feature(w), feats.numpy(), max_abs=5e-4,
                mean_abs=1e-5)
    print(rep.table())
    rep.assert_passed()


# ------------------------------------------------------------------ x-vector
@pytest.mark.parametrize("name", list(PROMPTS))
def test_xvector_matches_chatterbox(campplus_pair, wav16, name):
    from chatterbox.models.s3gen.xvector import extract_feature

    ref_model, port = campplus_pair
    w = wav16[name]
    with torch.no_grad():
        ref = ref_model.inference(torch.from_numpy(w)[None]).numpy()
        feats = extract_feature(torch.from_numpy(w)[None])[0]
        ref_same = ref_model(feats).numpy()
    ours = np.array(port.inference(w, 16000))
    ours_same = np.array(port(mx.array(feats.numpy())))
    rep = ParityReport("s3gen-prompt")
    rep.compare(f"x-vector (same fbank) {name}", ours_same, ref_same, max_abs=1e-5)
    rep.compare(f"x-vector {name}", ours, ref, cosine_min=0.9999, max_abs=1e-4)
    print(rep.table())
    rep.assert_passed()
    assert ours.shape == (1, 192)


def test_seg_pooling_ceil_mode_matches_torch():
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal((1, 257, 5)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 2, 1))
    seg = F.avg_pool1d(xt, kernel_size=100, stride=100, ceil_mode=True)
    ref = seg.unsqueeze(-1).expand(*seg.shape, 100).reshape(*seg.shape[:-1], -1)[..., :257]
    ours = np.array(C._seg_pooling(mx.array(x)))
    np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 1), atol=1e-6)


# ------------------------------------------------------------------ speech tokenizer
def test_rotary_table_matches_s3tokenizer():
    from s3tokenizer.model_v2 import precompute_freqs_cis

    ref = precompute_freqs_cis(64, 2048)
    cos, sin = T.rotary_cos_sin()
    # same float32 frequencies and angles; cos/sin within one float32 ulp
    np.testing.assert_allclose(cos, ref.real.numpy(), atol=1.2e-7, rtol=0)
    np.testing.assert_allclose(sin, ref.imag.numpy(), atol=1.2e-7, rtol=0)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_tokenizer_stages_match_s3tokenizer(tokenizer_pair, wav16, name):
    ref_model, port = tokenizer_pair
    w = wav16[name]
    wt = torch.from_numpy(w)[None]
    with torch.no_grad():
        ref_mel = ref_model.log_mel_spectrogram(wt)[0].numpy()
        n = torch.tensor([ref_mel.shape[1]])
        ref_hidden, ref_len = ref_model.encoder(torch.from_numpy(ref_mel)[None], n)
        ref_pre = torch.tanh(ref_model.quantizer._codebook.project_down(ref_hidden)) \
            * 0.9990000128746033
        ref_tok, ref_tok_len = ref_model(wt)          # chatterbox's own forward
    ours_mel = T.log_mel_spectrogram(w)
    hidden, hid_len = port.encoder(mx.array(ref_mel.T[None]), mx.array([ref_mel.shape[1]]))
    pre = np.array(port.quantizer.codebook.pre_round(hidden))
    tok, tok_len = port([w])
    rep = ParityReport("s3gen-prompt")
    rep.compare(f"tokenizer log-mel {name}", ours_mel, ref_mel, max_abs=1e-4)
    rep.compare(f"tokenizer encoder {name}", np.array(hidden), ref_hidden.numpy(), max_abs=1e-4)
    rep.compare(f"FSQ pre-round {name}", pre, ref_pre.numpy(), max_abs=1e-5)
    margin = float(np.abs(np.abs(ref_pre.numpy()) - 0.5).min())
    rep.compare(f"speech tokens {name}", np.array(tok), ref_tok.numpy(), exact=True,
                detail=f"nearest rounding tie {margin:.2e} away")
    rep.check("token lengths", int(np.array(tok_len)[0]) == int(ref_tok_len[0])
              and int(np.array(hid_len)[0]) == int(ref_len[0]))
    print(rep.table())
    rep.assert_passed()
    np.testing.assert_array_equal(port.tokenize(w, 16000), ref_tok.numpy()[0])


def test_long_audio_sliding_window_matches_s3tokenizer():
    """> 30 s (3000 frames) uses s3tokenizer's 30 s windows / 4 s overlap path; a small model with
    the real head size keeps this fast. Batch of one long and one short utterance (mixed path)."""
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    torch.manual_seed(3)
    cfg = ModelConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2)
    ref = S3TokenizerV2("speech_tokenizer_v2_25hz", cfg).eval()
    port = T.S3TokenizerV2(TokenizerConfig(n_state=128, n_head=2, n_layer=2))
    T.load_tokenizer_state_dict(port, {"tokenizer." + k: v.numpy()
                                       for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((2, 128, 5700)) * 0.5).astype(np.float32)
    lens = np.array([5700, 1234])
    mel[1, :, 1234:] = 0
    with torch.no_grad():
        ref_tok, ref_len = ref.quantize(torch.from_numpy(mel), torch.from_numpy(lens))
    tok, tok_len = port.quantize(mel, lens)
    np.testing.assert_array_equal(np.array(tok_len), ref_len.numpy())
    agree = (np.array(tok) == ref_tok.numpy()).mean()
    assert agree == 1.0, f"token agreement {agree:.4f}"


# ------------------------------------------------------------------ the whole prompt path
@pytest.mark.parametrize("rates", [(24000, 16000), (44100, 16000), (44100, 24000), (16000, 24000),
                                   (22050, 16000)])
def test_sinc_resample_matches_torchaudio(wav24, rates):
    import torchaudio

    o, n = rates
    x = wav24["1s"] if o == 24000 else sinc_resample(wav24["1s"], 24000, o)
    ref = torchaudio.transforms.Resample(o, n)(torch.from_numpy(x)[None]).numpy()
    ours = sinc_resample(x[None], o, n)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=5e-7, rtol=0)


def test_embed_ref_prompt_parts_match_chatterbox(wav24, campplus_pair, tokenizer_pair):
    """chatterbox's own ``S3Token2Mel.embed_ref`` on a 24 kHz prompt (its 16 kHz branch goes through
    torchaudio's resampler) against the port's prompt mel, x-vector and tokens from the same wav.
    The flow/vocoder are not needed for this: a bare S3Token2Mel holding the two random parts."""
    from chatterbox.models.s3gen.s3gen import S3Token2Mel
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram

    ref_cam, cam = campplus_pair
    ref_tok, tok = tokenizer_pair
    orig = S3Token2Mel.__new__(S3Token2Mel)
    torch.nn.Module.__init__(orig)
    orig.tokenizer, orig.speaker_encoder = ref_tok, ref_cam
    orig.mel_extractor = mel_spectrogram
    orig.flow = torch.nn.Linear(1, 1)      # only read for its dtype (float32)
    w = wav24["3s"]
    with torch.no_grad():
        ref = orig.embed_ref(torch.from_numpy(w), 24000)
    rep = ParityReport("s3gen-prompt")
    rep.compare("embed_ref prompt_feat", M.prompt_mel(w, 24000), ref["prompt_feat"].numpy(),
                max_abs=1e-4)
    rep.compare("embed_ref embedding", np.array(cam.inference(w, 24000)),
                ref["embedding"].numpy(), cosine_min=0.9999, max_abs=1e-4)
    toks = tok.tokenize(w, 24000)[: ref["prompt_feat"].shape[1] // 2]
    rep.compare("embed_ref prompt_token", toks[None], ref["prompt_token"].numpy(), exact=True)
    print(rep.table())
    rep.assert_passed()


# ------------------------------------------------------------------ loading and bad input
def test_rules_are_strict(tokenizer_pair, campplus_pair):
    ref_tok, _ = tokenizer_pair
    src = {"tokenizer." + k: v.numpy() for k, v in ref_tok.state_dict().items()}
    missing = dict(src)
    del missing["tokenizer.encoder.blocks.3.attn.out.bias"]
    with pytest.raises(ConversionError, match=r"blocks\.3\.attn\.out\.bias"):
        T.load_tokenizer_state_dict(T.S3TokenizerV2(), missing)
    ref_cam, _ = campplus_pair
    src = {"speaker_encoder." + k: v.numpy() for k, v in ref_cam.state_dict().items()}
    src["speaker_encoder.xvector.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"xvector\.extra\.weight"):
        C.load_campplus_state_dict(C.CAMPPlus(), src)
    # the composed rule lists consume exactly their own prefix
    from ports.common.convert import KeyMap

    both = {**{"tokenizer." + k: v.numpy() for k, v in ref_tok.state_dict().items()},
            **{"speaker_encoder." + k: v.numpy() for k, v in ref_cam.state_dict().items()}}
    out = KeyMap(T.TOKENIZER_RULES + C.CAMPPLUS_RULES).apply(both)
    assert "tokenizer.quantizer.codebook.project_down.weight" in out
    assert out["speaker_encoder.head.conv1.weight"].shape == (32, 3, 3, 1)


def test_prompt_audio_conversions_and_errors(wav16, campplus_pair, tokenizer_pair):
    w = wav16["1s"]
    # (1, N) and stereo (2, N) -> mono mean
    np.testing.assert_array_equal(P.as_mono(w[None]), w)
    np.testing.assert_allclose(P.as_mono(np.stack([w, 0.5 * w])), 0.75 * w, atol=1e-7)
    # another rate is resampled (polyphase): same number of mel frames as the native prompt
    from ports.common.audio import resample

    w44 = resample(w, 16000, 44100)
    assert M.prompt_mel(w44, 44100).shape == M.prompt_mel(resample(w, 16000, 24000), 24000).shape
    _, tok = tokenizer_pair
    assert tok.tokenize(w44, 44100).shape == tok.tokenize(w, 16000).shape
    _, cam = campplus_pair
    x44 = np.array(cam.inference(w44, 44100))
    x16 = np.array(cam.inference(w, 16000))
    assert (x44 * x16).sum() / np.linalg.norm(x44) / np.linalg.norm(x16) > 0.99
    # too short, empty, non-finite, integer samples, bad shape -> clear errors
    with pytest.raises(EmptyAudioError, match="shorter than the 80 ms mel window"):
        M.prompt_mel(np.zeros(1000, np.float32), 24000)
    with pytest.raises(EmptyAudioError, match="shorter than the 80 ms"):
        cam.inference(np.zeros(1000, np.float32), 16000)
    with pytest.raises(EmptyAudioError):
        tok.tokenize(np.zeros(0, np.float32), 16000)
    bad = w.copy()
    bad[10] = np.nan
    with pytest.raises(NonFiniteAudioError):
        M.prompt_mel(bad, 16000)
    with pytest.raises(UnsupportedAudioError, match="floating-point"):
        M.prompt_mel((w * 32767).astype(np.int16), 16000)
    with pytest.raises(UnsupportedAudioError, match="shape"):
        M.prompt_mel(np.zeros((1, 2, 3000), np.float32), 16000)
