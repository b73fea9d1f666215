"""Whole S3Gen: the strict full-state-dict converter on chatterbox's own random S3Gen saved as
safetensors, and end to end (prompt -> tokens/x-vector/mel -> flow -> HiFT) against it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ports.common.convert import ConversionError  # noqa: E402
from ports.s3gen import convert as conv  # noqa: E402
from ports.s3gen.parity import model_parity, original_s3gen, state_dict_numpy  # noqa: E402


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
def converted(original, tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("s3gen")
    src = d / "s3gen.safetensors"
    sd = {k: v.contiguous() for k, v in original.state_dict().items()}
    # the released checkpoint lacks these two tokenizer buffers (chatterbox loads it strict=False)
    for k in ("tokenizer._mel_filters", "tokenizer.window"):
        sd.pop(k)
    save_file(sd, str(src))
    dst = conv.convert(src, d / "s3gen-mlx.safetensors")
    yield conv.load_converted(dst)
    src.unlink()
    dst.unlink()


def test_convert_file_roundtrip(converted, original):
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


def test_missing_part_is_named(monkeypatch):
    from ports.s3gen import model as M

    monkeypatch.setitem(M.PARTS, "tokenizer", ("ports.s3gen.no_such_tokenizer", "S3TokenizerV2",
                                                "tokenizer_rules"))
    with pytest.raises(M.MissingPartError, match="'tokenizer'.*no_such_tokenizer"):
        M.S3Gen()
