"""Whole S3Gen: the strict full-state-dict converter on chatterbox's own random S3Gen saved as
safetensors, and end to end (prompt -> tokens/x-vector/mel -> flow -> HiFT) against it."""
import numpy as np
import pytest
import torch

from ports.common.convert import ConversionError
from ports.s3gen import convert as conv
from ports_parity.s3gen.parity import model_parity, original_s3gen, state_dict_numpy


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread is much faster under load
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def original():
    return original_s3gen(seed=0)


@pytest.fixture(scope="module")
def hub_env(original, tmp_path_factory):
    """chatterbox's random S3Gen saved as s3gen.safetensors in a Hugging Face cache layout
    (offline), and a private conversion cache."""
    import huggingface_hub.constants as k
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("s3gen")
    base = root / "hub" / "models--ResembleAI--chatterbox"
    blob = base / "blobs" / ("0" * 64)
    snap = base / "snapshots" / ("c" * 40)
    for d in (blob.parent, snap, base / "refs"):
        d.mkdir(parents=True)
    sd = {k_: v.contiguous() for k_, v in original.state_dict().items()}
    # the released checkpoint lacks these two tokenizer buffers (chatterbox loads it strict=False)
    for k_ in ("tokenizer._mel_filters", "tokenizer.window"):
        sd.pop(k_)
    save_file(sd, str(blob))
    del sd
    (snap / "s3gen.safetensors").symlink_to(blob)
    (base / "refs" / "main").write_text("c" * 40)
    mp = pytest.MonkeyPatch()
    mp.setattr(k, "HF_HUB_CACHE", str(root / "hub"))
    mp.setattr(k, "HF_HUB_OFFLINE", True)
    mp.setenv("AUDIO_PORTS_CACHE", str(root / "cache"))
    yield {"root": root, "snapshot": snap}
    mp.undo()
    blob.unlink()
    for f in (root / "cache").rglob("*.safetensors"):
        f.unlink()


@pytest.fixture(scope="module")
def converted(hub_env):
    from ports.s3gen import from_pretrained

    return from_pretrained("ResembleAI/chatterbox")  # hub -> strict conversion (cached) -> load


def test_convert_file_roundtrip(converted, original, hub_env):
    from ports.s3gen.pipeline import resolve_weights

    # a folder resolves to the same checkpoint; the conversion is cached once, in the MLX format
    assert resolve_weights(hub_env["snapshot"]).name == "s3gen.safetensors"
    cached = list((hub_env["root"] / "cache" / "s3gen").glob(conv.TAG + "-*.safetensors"))
    assert len(cached) == 1 and conv.is_converted(cached[0])
    assert not converted.meanflow
    # a folded weight-norm conv and a plain tensor from each part, spot-checked
    w = np.array(converted.mel2wav.ups[1].weight)
    g = original.mel2wav.ups[1].weight.detach().numpy()  # parametrized: the folded weight
    np.testing.assert_allclose(w, g.transpose(1, 2, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.array(converted.flow.input_embedding.weight),
                                  original.flow.input_embedding.weight.detach().numpy())


def test_converter_names_missing_and_unexpected_keys(original):
    sd = state_dict_numpy(original)
    gone = ["flow.encoder.encoders.3.self_attn.linear_out.bias",
            "mel2wav.conv_post.parametrizations.weight.original0",
            "speaker_encoder.xvector.dense.linear.weight",
            "tokenizer.encoder.blocks.2.mlp.0.weight"]
    for k in gone:
        assert k in sd, k
        del sd[k]
    sd["flow.decoder.estimator.extra.weight"] = np.zeros(2, np.float32)
    sd["vocoder.something"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError) as e:
        conv.convert_state_dict(sd)
    msg = str(e.value)
    for k in gone + ["flow.decoder.estimator.extra.weight", "vocoder.something"]:
        assert k in msg, k


def test_converter_shape_mismatch(original):
    sd = state_dict_numpy(original)
    sd["flow.encoder_proj.weight"] = sd["flow.encoder_proj.weight"][:, :10]
    with pytest.raises(ConversionError, match="flow.encoder_proj.weight"):
        conv.convert_state_dict(sd)


def test_end_to_end_with_prompt(converted, original):
    rep = model_parity(n_tokens=25, prompt_s=0.5, seed=0, original=original, port=converted)
    print(rep.table())
    rep.assert_passed()


def test_bad_tokens(converted):
    from ports.s3gen.model import check_tokens

    ref = dict(prompt_token=np.zeros((1, 0), np.int64), prompt_feat=np.zeros((1, 0, 80), np.float32),
               embedding=np.ones((1, 192), np.float32))
    with pytest.raises(ValueError, match=r"outside \[0, 6560\]"):
        converted.inference(np.array([1, 2, 6561]), ref)
    with pytest.raises(ValueError, match=r"outside \[0, 6560\]"):
        converted.inference(np.array([-1, 2]), ref)
    with pytest.raises(ValueError, match="empty"):
        converted.inference(np.array([], np.int64), ref)
    with pytest.raises(ValueError, match="integers"):
        check_tokens(np.array([1.5, 2.0]))
    assert check_tokens([0, 6560]).tolist() == [[0, 6560]]


def test_resampler_matches_torchaudio():
    import torchaudio

    from ports.common.audio import sinc_resample as resample

    x = np.random.default_rng(0).standard_normal(12345).astype(np.float32) * 0.3
    for a, b in [(24000, 16000), (44100, 24000), (16000, 24000), (22050, 16000), (8000, 16000)]:
        ref = torchaudio.transforms.Resample(a, b)(torch.from_numpy(x)).numpy()
        out = resample(x, a, b)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-6)


def test_cli_vocode_reproduces_chatterbox_mel(converted, original, hub_env, tmp_path):
    """``ports vocode`` with the original's noise: the dumped mel is chatterbox's mel."""
    from ports.cli import main
    from ports.common.audio import load_audio, write_audio
    from ports_parity.s3gen.parity import flow_noise, prompt_audio_sample

    n = 25
    tokens = np.random.default_rng(5).integers(0, 6561, n)
    np.save(tmp_path / "tokens.npy", tokens)
    write_audio(tmp_path / "ref.wav", prompt_audio_sample(0.6, 24000), 24000, subtype="FLOAT")
    w24, _ = load_audio(tmp_path / "ref.wav")
    with torch.no_grad():
        ref = original.embed_ref(torch.from_numpy(w24), 24000, device="cpu")
        torch.manual_seed(9)
        mel_ref = original.flow_inference(torch.from_numpy(tokens)[None], ref_dict=ref,
                                          finalize=True).numpy()
    z = flow_noise(9, n, 2 * (ref["prompt_token"].shape[1] + n), meanflow=False)
    np.save(tmp_path / "z.npy", z)
    rc = main(["vocode", "--tokens", str(tmp_path / "tokens.npy"), "--prompt", str(tmp_path / "ref.wav"),
               "-o", str(tmp_path / "out.wav"), "--noise", str(tmp_path / "z.npy"),
               "--dump", str(tmp_path / "d.npz"), "--plot", str(tmp_path / "mel.png"), "--seed", "1"])
    assert rc == 0
    d = np.load(tmp_path / "d.npz")
    assert d["mel"].shape == mel_ref.shape[1:]
    assert np.abs(d["mel"] - mel_ref[0]).mean() <= 0.01
    assert np.abs(d["mel"] - mel_ref[0]).max() <= 1e-3
    wav, sr = load_audio(tmp_path / "out.wav")
    assert sr == 24000 and len(wav) == d["wav"].shape[-1] == mel_ref.shape[-1] * 480
    assert (tmp_path / "mel.png").stat().st_size > 1000
    # bad token ids: one clear line, exit code 2
    np.save(tmp_path / "bad.npy", np.array([1, 6561]))
    assert main(["vocode", "--tokens", str(tmp_path / "bad.npy"), "--prompt", str(tmp_path / "ref.wav"),
                 "-o", str(tmp_path / "x.wav")]) == 2
    np.save(tmp_path / "empty.npy", np.zeros(0, np.int64))
    assert main(["vocode", "--tokens", str(tmp_path / "empty.npy"), "--prompt", str(tmp_path / "ref.wav"),
                 "-o", str(tmp_path / "x.wav")]) == 2


def test_cli_vc_runs(converted, original, hub_env, tmp_path):
    """``ports vc``: source speech -> the original's tokens -> speech of the right length."""
    from ports.cli import main
    from ports.common.audio import load_audio, write_audio
    from ports.common.samples import espeak

    src = espeak("Hello there.", sr=16000)[:8000]
    write_audio(tmp_path / "src.wav", src, 16000, subtype="FLOAT")
    write_audio(tmp_path / "voice.wav", espeak("A reference voice.", voice="en-gb", sr=24000)[:14400],
                24000, subtype="FLOAT")
    with torch.no_grad():
        toks, _ = original.tokenizer(torch.from_numpy(src)[None])
    toks_port, _ = converted.tokenizer([src])
    np.testing.assert_array_equal(np.array(toks_port), toks.numpy())
    rc = main(["vc", str(tmp_path / "src.wav"), "--voice", str(tmp_path / "voice.wav"),
               "-o", str(tmp_path / "vc.wav"), "--steps", "2", "--seed", "0"])
    assert rc == 0
    wav, sr = load_audio(tmp_path / "vc.wav")
    assert sr == 24000 and len(wav) == toks.shape[1] * 2 * 480


def test_meanflow_end_to_end():
    """Turbo/Nano weights (s3gen_meanflow): detected from the state dict, 2 steps without CFG."""
    orig = original_s3gen(seed=1, meanflow=True)
    from ports_parity.s3gen.parity import port_s3gen_from

    port = port_s3gen_from(orig)
    assert port.meanflow and port.config.steps == 2
    rep = model_parity(n_tokens=25, prompt_s=0.0, seed=1, meanflow=True, original=orig, port=port)
    print(rep.table())
    rep.assert_passed()


def test_prompt_bad_input(converted):
    from ports.common.audio import AudioError, EmptyAudioError
    from ports_parity.s3gen.parity import prompt_audio_sample

    with pytest.raises(EmptyAudioError, match="shorter than"):
        converted.embed_ref(np.zeros(1000, np.float32), 24000)  # < one 1920-sample mel window
    bad = prompt_audio_sample(0.3, 24000)
    bad[100] = np.nan
    with pytest.raises(AudioError):
        converted.embed_ref(bad, 24000)
    with pytest.raises(ValueError, match="sample rate"):
        converted.embed_ref(prompt_audio_sample(0.3, 24000), 0)
    # another rate and two channels: averaged and resampled (as chatterbox resamples)
    x = prompt_audio_sample(0.5, 44100)
    ref = converted.embed_ref(np.stack([x, 0.5 * x]), 44100)
    assert ref["prompt_feat"].shape == (1, 25, 80) and ref["embedding"].shape == (1, 192)
    assert ref["prompt_token"].shape[1] == 12


def test_missing_weights_are_named(tmp_path):
    from ports.common.hub import ModelSourceError
    from ports.s3gen.pipeline import resolve_weights

    with pytest.raises(ModelSourceError, match="neither an existing file"):
        resolve_weights(tmp_path / "nope")
    with pytest.raises(ModelSourceError, match="s3gen.safetensors.*s3gen_meanflow.safetensors"):
        resolve_weights(tmp_path)  # an empty folder
