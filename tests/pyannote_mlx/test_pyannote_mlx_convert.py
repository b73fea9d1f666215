"""Converter: real-format checkpoint -> MLX weights, strict keys, safetensors round trip, hub."""
import os
import pickle

import numpy as np
import pytest

from ports.common.convert import ConversionError
from ports_parity.pyannote_mlx import parity
from ports.pyannote_mlx.config import SegmentationConfig
from ports.pyannote_mlx.convert import convert, expected_shapes, load_weights, read_checkpoint


@pytest.fixture(scope="module")
def fx():
    return parity.fixture(64.3)


def test_config_from_checkpoint(fx):
    _, cfg, converted = read_checkpoint(fx.checkpoint)
    assert not converted
    assert cfg == SegmentationConfig()  # segmentation-3.0 hyper-parameters and Specifications
    assert cfg.lstm_layers == 4 and cfg.dimension == 7 and cfg.num_frames(160000) == 589
    assert cfg.receptive_field_size(1) == 991 and cfg.frames[2] == 270 / 16000
    assert cfg.powerset_classes == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]


def test_receptive_field_matches_pyannote(fx):
    rf = fx.orig.receptive_field
    assert (rf.start, rf.duration, rf.step) == SegmentationConfig().frames
    assert fx.orig.num_frames(160000) == SegmentationConfig().num_frames(160000)


def test_expected_shapes_match_model(fx):
    from ports.common.mlx_weights import param_shapes

    assert expected_shapes(fx.model.config) == param_shapes(fx.model)


def test_safetensors_round_trip(fx, tmp_path):
    from ports.pyannote_mlx.pipeline import load_model

    out = convert(fx.checkpoint, tmp_path / "seg.safetensors")
    w1, c1 = load_weights(fx.checkpoint)
    w2, c2 = load_weights(out)
    assert c1 == c2 and w1.keys() == w2.keys()
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    m = load_model(out)
    x = fx.chunks[:1]
    import mlx.core as mx

    assert np.array_equal(np.array(m(mx.array(x))), np.array(fx.model(mx.array(x))))


def _resave(fx, tmp_path, edit):
    import torch

    ck = torch.load(fx.checkpoint, weights_only=False)
    edit(ck["state_dict"])
    p = tmp_path / "edited.bin"
    torch.save(ck, p)
    return p


def test_checkpoint_with_older_pyannote_extras(fx, tmp_path):
    """pyannote 3.x checkpoints also pickle torch.__version__ (TorchVersion) and callback state."""
    import torch

    ck = torch.load(fx.checkpoint, weights_only=False)
    ck["pyannote.audio"]["versions"] = {"torch": torch.__version__, "pyannote.audio": "3.0.0"}
    ck["callbacks"] = {"ModelCheckpoint{'monitor': 'loss'}": {"best_model_score": torch.tensor(0.5),
                                                              "best_model_path": "x.ckpt"}}
    p = tmp_path / "old.bin"
    torch.save(ck, p)
    w, cfg = load_weights(p)
    assert cfg == SegmentationConfig() and w.keys() == load_weights(fx.checkpoint)[0].keys()


def test_missing_key_is_named(fx, tmp_path):
    p = _resave(fx, tmp_path, lambda sd: sd.pop("lstm.bias_hh_l2_reverse"))
    with pytest.raises(ConversionError, match=r"lstm\.bias_hh_l2_reverse"):
        load_weights(p)


def test_unexpected_key_is_named(fx, tmp_path):
    import torch

    p = _resave(fx, tmp_path, lambda sd: sd.__setitem__("lstm.weight_ih_l4", torch.zeros(512, 256)))
    with pytest.raises(ConversionError, match=r"lstm\.weight_ih_l4"):
        load_weights(p)


def test_wrong_shape_is_named(fx, tmp_path):
    import torch

    p = _resave(fx, tmp_path, lambda sd: sd.__setitem__("classifier.weight", torch.zeros(4, 128)))
    with pytest.raises(ConversionError, match=r"classifier\.weight"):
        load_weights(p)


def test_converted_file_with_missing_key(fx, tmp_path):
    from ports.common.convert import read_safetensors, save_safetensors

    out = convert(fx.checkpoint, tmp_path / "seg.safetensors")
    t, meta = read_safetensors(out)
    t.pop("sincnet.conv1d.0.weight")
    save_safetensors(t, tmp_path / "bad.safetensors", meta)
    with pytest.raises(ConversionError, match=r"sincnet\.conv1d\.0\.weight"):
        load_weights(tmp_path / "bad.safetensors")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_in_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.bin"
    with open(p, "wb") as fh:
        pickle.dump({"state_dict": {}, "x": _Evil()}, fh)
    with pytest.raises(ValueError, match="os.system|posix.system|not on the allow-list"):
        load_weights(p)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello")
    with pytest.raises(ValueError):
        load_weights(p)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent.bin")


def test_from_pretrained_hub_id_from_local_hf_cache(fx, tmp_path, monkeypatch):
    """``from_pretrained("pyannote/segmentation-3.0")`` through huggingface_hub's cache layout."""
    from ports.pyannote_mlx.pipeline import from_pretrained

    from ports_parity.hf_cache import add_repo, use_offline

    add_repo(tmp_path / "hub", "pyannote/segmentation-3.0", {"pytorch_model.bin": fx.checkpoint})
    use_offline(tmp_path / "hub", monkeypatch)
    monkeypatch.setenv("AUDIO_PORTS_CACHE", str(tmp_path / "conv"))
    inf = from_pretrained("pyannote/segmentation-3.0")
    seg = inf(fx.wav[: 16000 * 11])
    from ports.pyannote_mlx.inference import SegmentationInference

    ref = SegmentationInference(fx.model)(fx.wav[: 16000 * 11])
    assert np.array_equal(seg.multilabel, ref.multilabel)
    assert list((tmp_path / "conv" / "pyannote_mlx").glob("*.safetensors"))  # converted once
