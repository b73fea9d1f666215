"""orca_v1 model structure and converters (no real weights offline: seeded random weights)."""
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from ports.common.convert import ConversionError
from ports.common.unpickle import UnsafePickleError
from ports.orca_v1 import convert as C
from ports.orca_v1.model import OrcaResNet50, count_params, random_init_


@pytest.fixture(scope="module")
def model():
    return random_init_(OrcaResNet50(), seed=1)


@pytest.fixture(scope="module")
def sd(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_param_count_and_torchvision_keys(model, sd):
    # Expected from published numbers, not from the port: torchvision's resnet50 has 25,557,032
    # parameters; the body drops its fc (2048*1000 + 1000) and takes 1 input channel instead of
    # 3 (conv1: 64*7*7 fewer per dropped channel); fastai's head is BN1d(4096) + Linear(4096, 512)
    # + BN1d(512) + Linear(512, 2).
    body = 25_557_032 - (2048 * 1000 + 1000) - 2 * 64 * 7 * 7
    head = 2 * 4096 + (4096 * 512 + 512) + 2 * 512 + (512 * 2 + 2)
    assert count_params(model) == body + head
    assert sd["conv1.weight"].shape == (64, 1, 7, 7)
    # torchvision resnet50 names: 3/4/6/3 bottlenecks, downsample at block 0
    for layer, n in zip(range(1, 5), (3, 4, 6, 3)):
        assert f"layer{layer}.{n - 1}.conv3.weight" in sd and f"layer{layer}.{n}.conv1.weight" not in sd
        assert f"layer{layer}.0.downsample.0.weight" in sd and f"layer{layer}.0.downsample.1.running_var" in sd
    head = {k: v.shape for k, v in sd.items() if k.startswith("fc.")}
    assert head["fc.1.weight"] == (4096,) and head["fc.3.weight"] == (512, 4096)
    assert head["fc.5.running_mean"] == (512,) and head["fc.7.weight"] == (2, 512)
    # torchvision resnet50: 267 non-counter keys incl. fc.weight/bias; fastai head: 12 instead
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 267 - 2 + 12


def test_fastai_head_order_max_then_avg(model):
    x = torch.randn(2, 2048, 8, 10)
    y = model.avgpool(x).flatten(1)
    torch.testing.assert_close(y[:, :2048], x.amax(dim=(2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(y[:, 2048:], x.mean(dim=(2, 3)))


def test_round_trips_exact(sd):
    fa = C.port_to_fastai(sd)
    assert "0.0.weight" in fa and "0.4.0.conv1.weight" in fa and "1.8.weight" in fa
    assert "0.7.2.bn3.running_mean" in fa and "1.2.running_var" in fa
    back = C.fastai_to_port(fa)
    hf = C.port_to_hf(back)
    assert all(k.startswith("model.") for k in hf) and "model.fc.7.bias" in hf
    again = C.hf_to_port(hf)
    assert set(again) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(again[k], sd[k])
        assert again[k].dtype == sd[k].dtype
    assert C.to_port(C.port_to_fastai(again)).keys() == sd.keys()


def test_strict_errors_name_keys(sd):
    fa = C.port_to_fastai(sd)
    bad = dict(fa)
    del bad["0.5.1.conv2.weight"]
    bad["1.9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as e:
        C.fastai_to_port(bad)
    assert "layer2.1.conv2.weight" in str(e.value) and "1.9.weight" in str(e.value)
    bad = dict(fa)
    bad["0.0.weight"] = np.zeros((64, 3, 7, 7), np.float32)
    with pytest.raises(ConversionError, match="conv1.weight"):
        C.fastai_to_port(bad)


def test_missing_num_batches_tracked_is_filled(sd):
    hf = {k: v for k, v in C.port_to_hf(sd).items() if not k.endswith("num_batches_tracked")}
    out = C.hf_to_port(hf)
    assert out["bn1.num_batches_tracked"] == 0 and set(out) == set(sd)


def test_hf_save_load_and_pipeline_scores(tmp_path, model, sd):
    from ports.orca_v1.pipeline import OrcaDetector

    C.save_hf(sd, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()
    det = OrcaDetector.from_pretrained(tmp_path / "hf")
    x = (torch.randn(3, 256, 312) * 20).numpy()
    x[:, :, 157:] = 0
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(x).unsqueeze(1)), 1)[:, 1].double().numpy()
    np.testing.assert_allclose(det.scores(x, batch_size=2), ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- fastai export pickle
def _fake_module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        v.__module__ = name
        v.__qualname__ = k
        setattr(m, k, v)
    return m


@pytest.fixture()
def fake_fastai(monkeypatch):
    """Classes named like fastai/torchvision ones so a pickle names the same globals as a real
    ``Learner.export()``; removed after the test."""
    from ports.orca_v1 import model as M

    class AdaptiveConcatPool2d(nn.Module):
        def __init__(self):
            super().__init__()
            self.ap, self.mp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

    class Flatten(nn.Module):
        pass

    class Learner:
        pass

    class Bottleneck(M.Bottleneck):
        pass

    mods = {"fastai": _fake_module("fastai"),
            "fastai.layers": _fake_module("fastai.layers", AdaptiveConcatPool2d=AdaptiveConcatPool2d,
                                          Flatten=Flatten),
            "fastai.basic_train": _fake_module("fastai.basic_train", Learner=Learner),
            "torchvision": _fake_module("torchvision"),
            "torchvision.models": _fake_module("torchvision.models"),
            "torchvision.models.resnet": _fake_module("torchvision.models.resnet", Bottleneck=Bottleneck)}
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    return mods


def _fastai_learner_model(model, mods):
    Bottleneck = mods["torchvision.models.resnet"].Bottleneck
    body = nn.Sequential(model.conv1, model.bn1, nn.ReLU(inplace=True), model.maxpool,
                         model.layer1, model.layer2, model.layer3, model.layer4)
    for layer in body[4:]:
        for blk in layer:
            blk.__class__ = Bottleneck
    f = model.fc
    head = nn.Sequential(mods["fastai.layers"].AdaptiveConcatPool2d(), mods["fastai.layers"].Flatten(),
                         f[1], f[2], f[3], f[4], f[5], f[6], f[7])
    return nn.Sequential(body, head)


def test_fastai_export_pickle_read_without_fastai(tmp_path, fake_fastai):
    import functools

    from ports.orca_v1.model import Bottleneck as PortBottleneck
    from ports.orca_v1.pipeline import OrcaDetector

    src = random_init_(OrcaResNet50(), seed=2)
    ref_sd = {k: v.numpy().copy() for k, v in src.state_dict().items()}
    x = (torch.randn(2, 1, 256, 312) * 20)
    with torch.inference_mode():
        ref = torch.softmax(src(x), 1)[:, 1].double().numpy()
    learner_model = _fastai_learner_model(src, fake_fastai)
    state = {"opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99)),
             "loss_func": nn.CrossEntropyLoss(), "metrics": [], "true_wd": True, "bn_wd": True,
             "wd": 0.01, "train_bn": True, "model_dir": "models", "callback_fns": [],
             "cb_state": {}, "model": learner_model, "data": {"classes": ["negative", "positive"]},
             "cls": fake_fastai["fastai.basic_train"].Learner}
    pkl = tmp_path / "model.pkl"
    torch.save(state, pkl)
    for layer in (src.layer1, src.layer2, src.layer3, src.layer4):
        for blk in layer:
            blk.__class__ = PortBottleneck
    for k in [k for k in sys.modules if k.split(".")[0] in ("fastai", "torchvision")]:
        del sys.modules[k]  # the reader must not need them
    fa = C.read_fastai_export(pkl)
    assert "0.0.weight" in fa and "1.8.bias" in fa
    port = C.load_checkpoint(pkl)
    for k in ref_sd:
        np.testing.assert_array_equal(port[k], ref_sd[k])
    det = OrcaDetector.from_pretrained(pkl)
    np.testing.assert_allclose(det.scores(x[:, 0].numpy()), ref, rtol=0, atol=1e-5)
    C.convert(str(pkl), str(tmp_path / "out"))
    again = C.load_checkpoint(tmp_path / "out" / "model.safetensors")
    for k in ref_sd:
        np.testing.assert_array_equal(again[k], ref_sd[k])


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/orca_v1_pwned",))


def test_malicious_pickle_refused(tmp_path):
    p = tmp_path / "model.pkl"
    torch.save({"model": _Evil()}, p)
    with pytest.raises(UnsafePickleError, match="system"):
        C.load_checkpoint(p)
    p2 = tmp_path / "legacy.pkl"
    p2.write_bytes(pickle.dumps({"model": _Evil()}))
    with pytest.raises(UnsafePickleError):
        C.read_fastai_export(p2)
    import os
    assert not os.path.exists("/tmp/orca_v1_pwned")


def test_from_pretrained_hf_repo_id_offline_cache(tmp_path, monkeypatch, sd):
    """``from_pretrained("orcasound/orcahello-srkw-detector-v1")`` through huggingface_hub, from
    a local cache laid out like the Hub's (no network)."""
    from ports.orca_v1.config import HF_REPO
    from ports.orca_v1.pipeline import from_pretrained
    from ports_parity.hf_cache import add_repo, use_offline

    C.save_hf(sd, tmp_path / "src")
    add_repo(tmp_path / "hub", HF_REPO,
             {n: tmp_path / "src" / n for n in ("model.safetensors", "config.json")})
    use_offline(tmp_path / "hub", monkeypatch)
    det = from_pretrained(HF_REPO)
    got = {k2: v.numpy() for k2, v in det.model.state_dict().items()}
    for key in sd:
        np.testing.assert_array_equal(got[key], sd[key])
