"""Converters (openai .pt, HF transformers, CTranslate2) against the originals' own modules.
No MAX here: the mapping is proven with torch modules of the originals."""
import struct

import numpy as np
import pytest
import torch

from ports.common.convert import ConversionError
from ports.whisper_max import convert as C
from ports.whisper_max.config import WhisperDims, whisper_shapes
from ports_parity.real_weights import whisper_tiny_en

SMALL = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4,
                    n_audio_layer=2, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                    n_text_head=4, n_text_layer=2)


def _openai_model(dims=SMALL, seed=0):
    import whisper

    torch.manual_seed(seed)
    m = whisper.model.Whisper(dims.to_openai()).eval()
    with torch.no_grad():
        # openai leaves the decoder's positional embedding uninitialised (torch.empty)
        m.decoder.positional_embedding.normal_(0, 0.02)
        for n, p in m.named_parameters():  # LayerNorms non-trivial
            if "ln" in n:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _sd(m):
    return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def test_openai_pt_round_trip(tmp_path):
    m = _openai_model()
    path = tmp_path / "small.pt"
    # The layout openai-whisper's load_model reads (released checkpoints are fp16).
    torch.save({"dims": SMALL.to_dict(), "model_state_dict": m.half().state_dict()}, path)
    dims, sd = C.load_openai(path)
    assert dims == SMALL
    want = {k: v.float().numpy() for k, v in m.state_dict().items()}
    assert set(sd) == set(want) == set(whisper_shapes(SMALL))
    for k in want:
        np.testing.assert_array_equal(sd[k], want[k], err_msg=k)
        assert sd[k].dtype == np.float32
    out = tmp_path / "conv.safetensors"
    C.convert(path, out)
    dims2, sd2 = C.load_any(out)
    assert dims2 == SMALL and all(np.array_equal(sd2[k], sd[k]) for k in sd)


def test_openai_pt_missing_key_is_named(tmp_path):
    sd = _openai_model().state_dict()
    del sd["decoder.blocks.1.cross_attn.key.weight"]
    torch.save({"dims": SMALL.to_dict(), "model_state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match=r"decoder\.blocks\.1\.cross_attn\.key\.weight"):
        C.load_any(tmp_path / "bad.pt")


def test_openai_pt_wrong_dims_are_named(tmp_path):
    wrong = dict(SMALL.to_dict(), n_audio_state=128)
    torch.save({"dims": wrong, "model_state_dict": _openai_model().state_dict()},
               tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match=r"encoder\.conv1\.weight \(64, 80, 3\) != "
                                              r"expected \(128, 80, 3\)"):
        C.load_any(tmp_path / "bad.pt")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    import transformers
    cfg = transformers.WhisperConfig(
        vocab_size=SMALL.n_vocab, num_mel_bins=80, d_model=64, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=256, decoder_ffn_dim=256, max_source_positions=1500,
        max_target_positions=448)
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "layer_norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(d, safe_serialization=True)
    return d, hf


def test_hf_transformers_maps_onto_openai(hf_folder):
    import whisper

    folder, hf = hf_folder
    dims, sd = C.load_any(folder)
    assert dims == SMALL
    m = whisper.model.Whisper(dims.to_openai()).eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    mel = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 80, 3000)).astype(np.float32))
    tokens = torch.tensor([[50258, 50259, 50359, 400, 2068, 1451]])
    with torch.no_grad():
        enc_hf = hf.model.encoder(mel).last_hidden_state
        enc_oa = m.encoder(mel)
        np.testing.assert_allclose(enc_oa.numpy(), enc_hf.numpy(), atol=2e-5, rtol=0)
        logits_hf = hf(input_features=mel, decoder_input_ids=tokens).logits
        logits_oa = m.logits(tokens, enc_oa)
        np.testing.assert_allclose(logits_oa.numpy(), logits_hf.numpy(), atol=5e-5, rtol=0)


def test_hf_missing_tensor_is_named(hf_folder, tmp_path):
    from ports.common.convert import read_safetensors, save_safetensors

    folder, _ = hf_folder
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    t, _ = read_safetensors(folder / "model.safetensors")
    del t["model.encoder.layers.1.fc2.bias"]
    save_safetensors(t, tmp_path / "model.safetensors")
    with pytest.raises(ConversionError, match=r"encoder\.blocks\.1\.mlp\.2\.bias"):
        C.load_any(tmp_path)


def test_ct2_converted_from_hf_matches(hf_folder, tmp_path):
    """CTranslate2's own converter writes the model.bin; the reader recovers openai's weights."""
    import ctranslate2 as ct2
    folder, _ = hf_folder
    out = tmp_path / "ct2"
    ct2.converters.TransformersConverter(str(folder)).convert(str(out), quantization="float32")
    dims, sd = C.load_any(out)
    dims_hf, sd_hf = C.load_any(folder)
    assert dims == dims_hf and set(sd) == set(sd_hf)
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd_hf[k], err_msg=k)


def test_real_ct2_tiny_en_maps_all_167_tensors():

    dims, sd = C.load_any(whisper_tiny_en())
    assert len(sd) == 167 and set(sd) == set(whisper_shapes(dims))
    import whisper

    # the converted positional embedding is openai's sinusoids (fp16-rounded in the file)
    np.testing.assert_allclose(sd["encoder.positional_embedding"],
                               whisper.model.sinusoids(1500, 384).numpy(), atol=5e-4)


def test_ct2_truncated_or_foreign_files_fail_clearly(tmp_path):

    raw = (whisper_tiny_en() / "model.bin").read_bytes()
    d = tmp_path / "trunc"
    d.mkdir()
    (d / "model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        C.load_any(d)
    d2 = tmp_path / "v5"
    d2.mkdir()
    (d2 / "model.bin").write_bytes(struct.pack("<I", 5) + raw[4:100])
    with pytest.raises(ValueError, match="binary version 5"):
        C.load_any(d2)


def test_unknown_sources_fail_clearly(tmp_path):
    from ports.whisper_max.pipeline import resolve_source

    with pytest.raises(FileNotFoundError, match="not a known name"):
        resolve_source("no-such-model")
    with pytest.raises(ValueError, match="not a Whisper model folder"):
        C.load_any(tmp_path)


def test_repo_ids_resolve_through_the_hf_cache(tmp_path, monkeypatch, hf_folder):
    """A CTranslate2 repo (faster-whisper style) and an HF transformers repo, from a local
    huggingface_hub cache layout (offline)."""
    from ports.whisper_max.pipeline import resolve_source
    from ports_parity.hf_cache import add_repo, use_offline

    cache = tmp_path / "hub"
    use_offline(cache, monkeypatch)
    ct2 = whisper_tiny_en()
    add_repo(cache, "someone/faster-whisper-tiny.en", {f: ct2 / f for f in ("model.bin", "config.json")})
    folder, _ = hf_folder
    add_repo(cache, "someone/whisper-small-test",
             {f: folder / f for f in ("model.safetensors", "config.json")})
    dims, sd = C.load_any(resolve_source("someone/faster-whisper-tiny.en"))
    assert dims.n_vocab == 51864 and len(sd) == 167
    dims, sd = C.load_any(resolve_source("someone/whisper-small-test"))
    assert dims == SMALL
