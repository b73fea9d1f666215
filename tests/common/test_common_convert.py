import os
import pickle

import numpy as np
import pytest
import torch

from ports.common import convert as C
from ports.common.unpickle import Stub, UnsafePickleError, restricted_load, stub_tree_state_dict


def _src():
    rng = np.random.default_rng(0)
    return {
        "enc.conv.weight": rng.standard_normal((4, 3, 5)).astype(np.float32),
        "enc.lin.weight": rng.standard_normal((6, 4)).astype(np.float32),
        "lstm.bias_ih_l0": rng.standard_normal(8).astype(np.float32),
        "lstm.bias_hh_l0": rng.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(3),
    }


RULES = [
    C.Drop(r".*num_batches_tracked"),
    C.Rule(r"enc\.conv\.weight", "conv.weight", C.transpose(0, 2, 1)),
    C.Rule(r"enc\.lin\.weight", "lin.weight"),
    C.Combine(r"lstm\.bias_ih_l(\d)", [r"lstm.bias_ih_l\1", r"lstm.bias_hh_l\1"], r"lstm.\1.bias", C.add),
]


def test_keymap_maps_and_transforms():
    src = _src()
    out = C.KeyMap(RULES).apply(src, expected={"conv.weight": (4, 5, 3), "lin.weight": (6, 4), "lstm.0.bias": (8,)})
    np.testing.assert_array_equal(out["conv.weight"], src["enc.conv.weight"].transpose(0, 2, 1))
    np.testing.assert_array_equal(out["lstm.0.bias"], src["lstm.bias_ih_l0"] + src["lstm.bias_hh_l0"])
    assert out["conv.weight"].flags.c_contiguous


def test_keymap_strict_lists_every_problem_at_once():
    src = _src()
    src["enc.extra"] = np.zeros(2, np.float32)
    del src["lstm.bias_hh_l0"]
    with pytest.raises(C.ConversionError) as ei:
        C.KeyMap(RULES).apply(src, expected={"conv.weight": (4, 3, 5), "lin.weight": (6, 4),
                                             "lstm.0.bias": (8,), "head.weight": (2, 2)})
    e = ei.value
    msg = str(e)
    assert "enc.extra" in e.unexpected and "enc.extra" in msg
    assert "lstm.bias_hh_l0" in e.missing and "head.weight" in e.missing
    assert any(k == "conv.weight" for k, _, _ in e.mismatched) and "(4, 5, 3)" in msg


def test_keymap_duplicate_target_is_an_error():
    src = {"a": np.zeros(1), "b": np.zeros(1)}
    with pytest.raises(C.ConversionError, match="produced twice"):
        C.KeyMap([C.Rule(r"a|b", "x")]).apply(src)


def test_reshape_squeeze_chain_astype():
    a = np.arange(12, dtype=np.float64)
    assert C.reshape(3, 4)(a).shape == (3, 4)
    assert C.squeeze(0)(a[None]).shape == (12,)
    assert C.chain(C.reshape(3, 4), C.transpose())(a).shape == (4, 3)
    assert C.astype(np.float32)(a).dtype == np.float32


@pytest.mark.parametrize("kind", ["conv", "convtranspose", "linear"])
def test_weight_norm_fold_matches_torch(kind):
    torch.manual_seed(0)
    mod = {"conv": torch.nn.Conv1d(4, 6, 3), "convtranspose": torch.nn.ConvTranspose1d(4, 6, 5),
           "linear": torch.nn.Linear(5, 7)}[kind]
    mod = torch.nn.utils.parametrizations.weight_norm(mod)
    with torch.no_grad():  # make g differ from ||v||
        mod.parametrizations.weight.original0.mul_(torch.rand_like(mod.parametrizations.weight.original0) + 0.5)
    sd = {k: v.detach().numpy() for k, v in mod.state_dict().items()}
    out = C.KeyMap([
        C.Combine(r"parametrizations\.weight\.original0",
                  ["parametrizations.weight.original0", "parametrizations.weight.original1"],
                  "weight", C.weight_norm(0)),
        C.Rule("bias"),
    ]).apply(sd)
    np.testing.assert_allclose(out["weight"], mod.weight.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_load_state_dict_formats(tmp_path):
    torch.manual_seed(0)
    sd = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 5), torch.nn.BatchNorm1d(3)).state_dict()
    sd["bf16"] = torch.randn(3, 4).to(torch.bfloat16)
    sd["half"] = torch.randn(5).half()
    sd["strided"] = torch.randn(4, 6).t()
    sd["int"] = torch.arange(5)
    ref = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()}
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "zip.ckpt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("zip.ckpt", "legacy.pt", "w.safetensors"):
        got = C.load_state_dict(tmp_path / name)
        assert set(got) == set(ref), name
        for k in ref:
            assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), (name, k)
    C.save_safetensors({"a": ref["strided"], "n": np.array(7)}, tmp_path / "o.safetensors", {"port": "x"})
    back, meta = C.read_safetensors(tmp_path / "o.safetensors")
    assert np.array_equal(back["a"], ref["strided"]) and meta == {"port": "x"}
    assert back["n"].shape == () and back["n"] == 7


def test_load_state_dict_key_and_errors(tmp_path):
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "c.pt")
    assert np.array_equal(C.load_state_dict(tmp_path / "c.pt", key="model")["w"], np.ones(2, np.float32))
    with pytest.raises(KeyError, match="no entry 'nope'"):
        C.load_state_dict(tmp_path / "c.pt", key="nope")
    with pytest.raises(FileNotFoundError):
        C.load_state_dict(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo SHOULD-NOT-RUN > /tmp/audio-ports-pwned",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("evil", [_Evil(), _EvalEvil()])
@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_malicious_pickle_is_refused(tmp_path, evil, fmt):
    path = tmp_path / "evil.bin"
    if fmt == "torch":
        torch.save({"state_dict": {"w": torch.ones(1)}, "payload": evil}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": evil}))
    if os.path.exists("/tmp/audio-ports-pwned"):
        os.unlink("/tmp/audio-ports-pwned")
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        C.load_state_dict(path)
    assert not os.path.exists("/tmp/audio-ports-pwned")


def test_stubbed_framework_objects_are_inert(tmp_path):
    # A pickled nn.Module tree (fastai exports pickle whole models) loads as stubs with state.
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    torch.save({"model": m}, tmp_path / "m.pkl")
    with pytest.raises(UnsafePickleError, match="torch.nn"):
        restricted_load(tmp_path / "m.pkl")
    obj = restricted_load(tmp_path / "m.pkl", stub_modules=["torch.nn"])
    assert isinstance(obj["model"], Stub)
    sd = stub_tree_state_dict(obj["model"])
    assert set(sd) == set(m.state_dict())
    for k, v in m.state_dict().items():
        assert np.array_equal(sd[k], v.numpy())
