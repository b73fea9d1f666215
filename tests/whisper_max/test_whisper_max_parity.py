"""MAX encoder vs the installed openai-whisper AudioEncoder, layer by layer, random weights.

Each graph shape compiles once per process (tiny and base: a stem and a block graph each; a
cold compile is minutes on 2 cores, warm ~10 s from ~/.cache/modular)."""
import numpy as np
import pytest

from ports_parity.common.parity import ParityReport
from ports.whisper_max import model as M
from ports.whisper_max.config import dims_for
from ports_parity.whisper_max.parity import (LAYER_TOL, compare_stages, random_encoder, random_mel,
                                      torch_stages)


@pytest.fixture(scope="module", params=["tiny", "base"])
def random_pair(request):
    dims = dims_for(request.param)
    enc, sd = random_encoder(dims, seed=1)
    return request.param, dims, enc, sd, M.MaxAudioEncoder(dims, sd)


def test_every_layer_matches_openai(random_pair):
    name, dims, enc, _, port = random_pair
    # batch of 2: the graph runs per item, the original batched.
    mel = random_mel(dims, batch=2, seed=3)
    report = ParityReport("whisper_max")
    compare_stages(report, f"{name}: ", port, torch_stages(enc, mel), mel)
    print(report.table())
    report.assert_passed()
    names = [s.name for s in report.stages]
    assert names == [f"{name}: {s}" for s in
                     ["conv1", "conv2+pos", *[f"block{i}" for i in range(dims.n_audio_layer)],
                      "ln_post", "forward"]]


def test_unbatched_input_matches_batched(random_pair):
    _, dims, _, _, port = random_pair
    mel = random_mel(dims, batch=1, seed=5)
    np.testing.assert_array_equal(port(mel[0]), port(mel)[0])


def test_one_compiled_graph_serves_other_weights(random_pair):
    name, dims, _, _, port = random_pair
    before = dict(M._compiled)
    enc2, sd2 = random_encoder(dims, seed=7)
    port2 = M.MaxAudioEncoder(dims, sd2)
    assert M._compiled == before  # no new compile for a new weight set of the same shape
    mel = random_mel(dims, seed=9)
    ref = torch_stages(enc2, mel)["forward"]
    got = port2(mel)
    assert np.abs(got - ref).max() <= LAYER_TOL * np.abs(ref).max()
    assert np.abs(port(mel) - got).max() > 1e-2  # really the other weights


def test_bad_mel_is_rejected(random_pair):
    _, dims, _, _, port = random_pair
    with pytest.raises(ValueError, match="mel must have shape"):
        port(np.zeros((dims.n_mels, 2999), np.float32))
    with pytest.raises(ValueError, match="mel must have shape"):
        port(np.zeros((dims.n_mels + 1, 3000), np.float32))
    bad = np.zeros((dims.n_mels, 3000), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        port(bad)


def test_weights_with_wrong_dims_or_missing_keys_name_them():
    from ports.common.convert import ConversionError

    dims = dims_for("tiny")
    _, sd = random_encoder(dims, seed=0)
    sd_missing = dict(sd)
    del sd_missing["blocks.2.attn.key.weight"]
    with pytest.raises(ConversionError, match=r"blocks\.2\.attn\.key\.weight"):
        M.MaxAudioEncoder(dims, sd_missing)
    sd_extra = dict(sd, **{"blocks.0.attn.key.bias": np.zeros(384, np.float32)})
    with pytest.raises(ConversionError, match=r"blocks\.0\.attn\.key\.bias"):
        M.MaxAudioEncoder(dims, sd_extra)
    with pytest.raises(ConversionError, match=r"conv1\.weight \(512, 80, 3\) != expected \(384, 80, 3\)"):
        _, base_sd = random_encoder(dims_for("base"), seed=0)
        M.MaxAudioEncoder(dims, base_sd)


def test_attention_is_the_fused_kernel_by_default(random_pair):
    _, dims, _, _, port = random_pair
    assert port.fused_attention
    assert ("encoder_graph", dims.n_mels, dims.n_audio_ctx, dims.n_audio_state,
            dims.n_audio_head, dims.n_audio_layer, True) in M._compiled


def _attention_graph(H):
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, ops

    dev, f32 = DeviceRef.CPU(), DType.float32
    types = [TensorType(f32, ("b", "t", 3 * H * 64), device=dev),
             TensorType(f32, ("b", H, 64, "t"), device=dev),
             TensorType(f32, ("b", H, "t", 64), device=dev), TensorType(f32, (1,), device=dev)]
    with Graph(f"whisper_attention_test_{H}", input_types=types,
               custom_extensions=[M.kernel_package()]) as g:
        qkv, k, v, s = (x.tensor for x in g.inputs)
        out = TensorType(f32, [qkv.shape[0], qkv.shape[1], H, 64], device=dev)
        g.output(ops.custom("whisper_attention", dev, [qkv, k, v, s], [out])[0].tensor)
    return g


@pytest.fixture(scope="module")
def attention_op():
    """The custom op alone in a graph (batch and length symbolic: one compile)."""
    return M.session().load(_attention_graph(3))


@pytest.mark.parametrize("b,t", [(2, 13), (1, 6), (1, 1), (1, 45), (2, 600)])
def test_attention_kernel_matches_float64(attention_op, b, t):
    """The custom op alone, on lengths with partial row and key tiles: within fp32 rounding of
    softmax((q * scale) k^T) v in float64 (q read from the fused projection)."""
    H, D = 3, 3 * 64
    model = attention_op
    rng = np.random.default_rng(t)
    qkv = rng.standard_normal((b, t, 3 * D), np.float32)
    k = rng.standard_normal((b, H, 64, t), np.float32)
    v = rng.standard_normal((b, H, t, 64), np.float32)
    scale = np.array([0.35], np.float32)
    got = model.execute(qkv, k, v, scale)[0].to_numpy()
    q = (qkv[..., :D] * scale).reshape(b, t, H, 64).astype(np.float64)
    sc = np.einsum("bthd,bhds->bhts", q, k.astype(np.float64))
    p = np.exp(sc - sc.max(-1, keepdims=True))
    ref = np.einsum("bhts,bhsd->bthd", p / p.sum(-1, keepdims=True), v.astype(np.float64))
    assert got.shape == (b, t, H, 64)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_max_ops_attention_matches_openai(monkeypatch):
    """AUDIO_PORTS_MAX_KERNELS=0: the attention as MAX ops, the same bounds."""
    monkeypatch.setenv("AUDIO_PORTS_MAX_KERNELS", "0")
    dims = dims_for("tiny")
    enc, sd = random_encoder(dims, seed=1)
    port = M.MaxAudioEncoder(dims, sd)
    assert not port.fused_attention
    mel = random_mel(dims, batch=1, seed=3)
    report = ParityReport("whisper_max")
    compare_stages(report, "tiny, MAX-ops attention: ", port, torch_stages(enc, mel), mel)
    report.assert_passed()


def test_failed_kernel_build_falls_back_with_a_warning(monkeypatch):
    """A Mojo build failure (no compiler, a read-only cache) costs speed, not the model."""
    def broken():
        raise RuntimeError("mojo: error: simulated build failure")

    monkeypatch.setattr(M, "kernel_package", broken)
    # the fused graphs built, as on a cold start (the MAX-ops one may stay: it needs no kernel)
    monkeypatch.setattr(M, "_compiled", {k: v for k, v in M._compiled.items() if k[-1] is not True})
    monkeypatch.setenv("AUDIO_PORTS_MAX_ARTIFACTS", "0")
    dims = dims_for("tiny")
    _, sd = random_encoder(dims, seed=1)
    with pytest.warns(UserWarning, match="simulated build failure"):
        port = M.MaxAudioEncoder(dims, sd)
    assert not port.fused_attention
