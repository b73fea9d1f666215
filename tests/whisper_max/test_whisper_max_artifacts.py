"""The compiled-graph artifact cache: a later start initialises from the stored ``.mef``
instead of compiling, with the same outputs; a damaged artifact is compiled again."""
import numpy as np
import pytest

from ports.whisper_max import decoder as dec
from ports.whisper_max import model as M
from ports.whisper_max.config import dims_for


def _shape():
    d = dims_for("tiny.en")
    return (d.n_audio_ctx, d.n_text_state, d.n_text_head, d.n_text_layer)


def _registry(seed=0):
    d = dims_for("tiny.en")
    rng = np.random.default_rng(seed)
    D = d.n_text_state
    reg = {}
    for i in range(d.n_text_layer):
        reg[f"blocks.{i}.cross_attn.kv.weight_t"] = rng.standard_normal((D, 2 * D), np.float32)
        reg[f"blocks.{i}.cross_attn.kv.bias"] = rng.standard_normal(2 * D, np.float32)
    return reg


def _run(compiled, reg):
    x = np.random.default_rng(1).standard_normal((1, 1500, 384), np.float32)
    return [t.to_numpy().copy() for t in M.session().init(compiled, weights_registry=reg).execute(x)]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_CACHE", str(tmp_path))
    monkeypatch.delenv("AUDIO_PORTS_MAX_ARTIFACTS", raising=False)
    return tmp_path


def _compile_via_cache(monkeypatch, forbid_compile: bool):
    """``compiled()`` as a fresh process would run it (empty in-process table); with
    ``forbid_compile`` neither building nor compiling the graph is allowed."""
    monkeypatch.setattr(M, "_compiled", {})
    build = dec.cross_kv_graph
    if forbid_compile:
        def no_compile(*_a, **_k):
            raise AssertionError("compiled although an artifact was stored")
        monkeypatch.setattr(M.session(), "compile", no_compile)

        def build(*_a):  # noqa: F811 - same name: the artifact key includes it
            raise AssertionError("built the graph although an artifact was stored")
        build.__module__, build.__qualname__ = dec.cross_kv_graph.__module__, "cross_kv_graph"
        build.__name__ = "cross_kv_graph"
    return M.compiled(build, *_shape())


def test_artifact_key_is_stable_and_names_builder_and_shape(cache):
    path = M._artifact(dec.cross_kv_graph, _shape())
    assert path == M._artifact(dec.cross_kv_graph, _shape())  # same builder and shape: same key
    assert path.parent == cache / "whisper_max" / "graphs"
    assert path.name.startswith("cross_kv_graph_1500_384_6_4-")
    assert M._artifact(dec.cross_kv_graph, (1500, 384, 6, 2)) != path


def test_second_start_initialises_from_the_artifact(cache, monkeypatch):
    reg = _registry()
    first = _run(_compile_via_cache(monkeypatch, forbid_compile=False), reg)
    stored = sorted((cache / "whisper_max" / "graphs").glob("*.mef"))
    assert len(stored) == 1 and stored[0].stat().st_size > 0
    again = _run(_compile_via_cache(monkeypatch, forbid_compile=True), reg)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_damaged_artifact_is_compiled_again(cache, monkeypatch):
    path = M._artifact(dec.cross_kv_graph, _shape())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a MEF")
    with pytest.warns(UserWarning, match="compiling again"):
        c = _compile_via_cache(monkeypatch, forbid_compile=False)
    assert path.stat().st_size > len(b"not a MEF")  # replaced by a good one
    assert len(_run(c, _registry())) == 8


def test_artifacts_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_MAX_ARTIFACTS", "0")
    _compile_via_cache(monkeypatch, forbid_compile=False)
    assert not (cache / "whisper_max" / "graphs").exists()
