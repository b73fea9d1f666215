"""S3Gen flow (MLX) against chatterbox 0.1.7's own `CausalMaskedDiffWithXvec`, stage by stage.

Random seeded weights with chatterbox's hyper-parameters: the original flow is built by
`S3Token2Mel` itself (tokenizer and CAMPPlus patched out: they are not part of the flow), its
state dict converted with FLOW_RULES through a strict KeyMap. Intermediates of the original come
from forward hooks and a recording wrapper around its estimator (the solver calls
`estimator.forward` directly, which skips hooks). The noise is the original's own draw:
`torch.manual_seed(s)` before `flow.inference` makes `randn_like(mu)` equal `torch.randn(1, 80, T)`.
"""
from __future__ import annotations

import numpy as np
import pytest

import torch  # noqa: E402  (the original; never skipped)

from ports.common.convert import ConversionError, KeyMap  # noqa: E402
from ports.common.mlx_weights import param_shapes  # noqa: E402
from ports.common import mlx_fastmath as FM  # noqa: E402
from ports.s3gen import flow as F  # noqa: E402
from ports_parity.s3gen.originals import (build_original_flow, flow_inputs,  # noqa: E402
                                          port_from_original)

ENC_MAX_ABS = 1e-4


def _perturb_(module: "torch.nn.Module", seed: int) -> None:
    """Make default-initialised constants (LayerNorm 1/0, zero biases, identity mixer) random so
    that a swapped or dropped tensor shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "time_embed_mixer" in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g))


def _build_original(meanflow: bool, seed: int):
    flow = build_original_flow(meanflow, seed)
    _perturb_(flow, seed + 1)
    return flow


def _build_port(flow_t, meanflow: bool):
    return port_from_original(flow_t, meanflow)  # FLOW_RULES through a strict KeyMap


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # the machine is shared: two torch threads under load are ~10x slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def standard():
    flow_t = _build_original(False, 1234)
    return flow_t, _build_port(flow_t, False)


@pytest.fixture(scope="module")
def meanflow():
    flow_t = _build_original(True, 4321)
    return flow_t, _build_port(flow_t, True)


def _run_original(flow_t, tok, ptok, pfeat, xvec, seed: int, meanflow: bool):
    rec = {}

    def hook(name, pick=lambda o: o):
        def fn(mod, args, out):
            rec[name] = pick(out).detach().clone().numpy()
        return fn

    hs = [flow_t.spk_embed_affine_layer.register_forward_hook(hook("embedding")),
          flow_t.input_embedding.register_forward_hook(hook("token_embedding")),
          flow_t.encoder.register_forward_hook(hook("encoder_out", lambda o: o[0])),
          flow_t.encoder_proj.register_forward_hook(hook("mu", lambda o: o.transpose(1, 2)))]
    est = flow_t.decoder.estimator
    orig_forward = est.forward
    calls = []

    def recording_forward(*args, **kw):
        x = kw["x"] if "x" in kw else args[0]
        out = orig_forward(*args, **kw)
        calls.append((x.detach().clone().numpy(), out.detach().clone().numpy()))
        return out

    est.forward = recording_forward
    try:
        T = 2 * (tok.shape[1] + ptok.shape[1])
        torch.manual_seed(seed)
        noise = torch.randn(1, 80, T).numpy()
        torch.manual_seed(seed)
        mel, _ = flow_t.inference(
            token=torch.from_numpy(tok), token_len=torch.tensor([tok.shape[1]]),
            prompt_token=torch.from_numpy(ptok), prompt_token_len=torch.tensor([ptok.shape[1]]),
            prompt_feat=torch.from_numpy(pfeat), prompt_feat_len=None,
            embedding=torch.from_numpy(xvec), finalize=True,
            n_timesteps=2 if meanflow else 10, meanflow=meanflow)
    finally:
        del est.forward
        for h in hs:
            h.remove()
    rec["mel"] = mel.numpy()
    rec["noise"] = noise
    rec["estimator_in"] = [c[0] for c in calls]
    rec["estimator_out"] = [c[1] for c in calls]
    return rec


def _cmp(rows, name, port, ref, max_abs=None, mean_abs=None):
    port = np.asarray(port, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert port.shape == ref.shape, f"{name}: shape {port.shape} != {ref.shape}"
    d = np.abs(port - ref)
    row = (name, float(d.max()), float(d.mean()), float(np.abs(ref).max()))
    rows.append(row)
    ok = (max_abs is None or row[1] <= max_abs) and (mean_abs is None or row[2] <= mean_abs)
    return ok


def _report(rows):
    return "\n".join(f"{n:28s} max_abs {a:.3e}  mean_abs {m:.3e}  (ref max {r:.3g})" for n, a, m, r in rows)


def _parity(flow_t, port, n_tok, n_prompt, seed, meanflow):
    tok, ptok, pfeat, xvec = flow_inputs(n_tok, n_prompt, seed)
    ref = _run_original(flow_t, tok, ptok, pfeat, xvec, seed, meanflow)
    mel, st = port.inference(tok, [n_tok], ptok, [n_prompt], pfeat, xvec, noise=ref["noise"],
                             meanflow=meanflow, return_stages=True)
    rows, bad = [], []
    checks = [
        ("speaker projection", st["embedding"], ref["embedding"], 1e-5, None),
        ("token embedding", st["token_embedding"], ref["token_embedding"], 0.0, None),
        ("encoder output", st["encoder_out"], ref["encoder_out"], ENC_MAX_ABS, None),
        ("mu", st["mu"], ref["mu"], ENC_MAX_ABS, None),
    ]
    n_steps = len(st["estimator_out"])
    assert len(ref["estimator_out"]) == n_steps
    for i in range(n_steps):
        if i > 0:
            checks.append((f"state {i}", st["states"][i - 1], ref["estimator_in"][i][:1], None, None))
        checks.append((f"velocity field {i}", st["estimator_out"][i], ref["estimator_out"][i], None, None))
    checks.append(("final mel", mel, ref["mel"], 1e-3, 0.01))
    for name, p, r, ma, me in checks:
        if not _cmp(rows, name, np.array(p), r, ma, me):
            bad.append(name)
    print(_report(rows))
    return rows, bad


@pytest.mark.parametrize("n_tok,n_prompt", [(25, 0), (25, 25)])
def test_flow_parity_standard(standard, n_tok, n_prompt):
    rows, bad = _parity(*standard, n_tok, n_prompt, seed=7 + n_prompt, meanflow=False)
    assert not bad, f"stages out of tolerance: {bad}\n{_report(rows)}"


@pytest.mark.parametrize("streams", [True, False])
def test_flow_parity_mlx_estimator(standard, monkeypatch, streams):
    """Without the C++ estimator blocks (no g++, AUDIO_PORTS_NATIVE=0, the GPU): the CFG halves
    on two CPU streams, or as one batch-2 call (the GPU's path), hold the same bounds."""
    from ports.common import mlx_layers
    from ports.s3gen import flow_decoder

    monkeypatch.setattr(flow_decoder, "native_estimator", lambda: None)
    if not streams:
        monkeypatch.setattr(mlx_layers, "cpu_streams", lambda n=2: None)
    rows, bad = _parity(*standard, 25, 25, seed=32, meanflow=False)
    assert not bad, f"stages out of tolerance: {bad}\n{_report(rows)}"


def test_flow_parity_meanflow(meanflow):
    rows, bad = _parity(*meanflow, 30, 20, seed=11, meanflow=True)
    assert not bad, f"stages out of tolerance: {bad}\n{_report(rows)}"


def test_encoder_parity_100_tokens(standard):
    """Encoder + mu for 100 tokens with a 1 s (25-token) prompt, through the original's modules."""
    flow_t, port = standard
    tok, ptok, pfeat, xvec = flow_inputs(100, 25, 3)
    all_tok = torch.from_numpy(np.concatenate([ptok, tok], axis=1))
    with torch.inference_mode():
        h, _ = flow_t.encoder(flow_t.input_embedding(all_tok), torch.tensor([all_tok.shape[1]]))
        mu = flow_t.encoder_proj(h)
    import mlx.core as mx
    h_p = port.encoder(port.input_embedding(mx.array(all_tok.numpy().astype(np.int32))))
    mu_p = port.encoder_proj(h_p)
    rows = []
    ok = _cmp(rows, "encoder output (100+25 tok)", np.array(h_p), h.numpy(), ENC_MAX_ABS)
    ok &= _cmp(rows, "mu (100+25 tok)", np.array(mu_p), mu.numpy(), ENC_MAX_ABS)
    print(_report(rows))
    assert ok, _report(rows)


def test_flow_rules_strict(standard):
    flow_t, _ = standard
    src = {"flow." + k: v.detach().numpy() for k, v in flow_t.state_dict().items()}
    port = F.CausalMaskedDiffWithXvec()
    expected = param_shapes(port, "flow.")
    out = KeyMap(F.FLOW_RULES).apply(src, expected=expected)
    assert out["flow.encoder.up_layer.conv.weight"].shape == (512, 5, 512)
    missing = dict(src)
    del missing["flow.encoder.encoders.3.self_attn.pos_bias_u"]
    with pytest.raises(ConversionError, match=r"encoders\.3\.self_attn\.pos_bias_u"):
        F.load_flow_state_dict(port, missing)
    extra = dict(src)
    extra["flow.decoder.estimator.time_embed_mixer.weight"] = np.zeros((1024, 2048), np.float32)
    with pytest.raises(ConversionError, match="time_embed_mixer"):
        F.load_flow_state_dict(port, extra)


def test_bad_input(standard):
    _, port = standard
    tok, ptok, pfeat, xvec = flow_inputs(5, 0, 1)
    with pytest.raises(ValueError, match=r"\[0, 6560\]"):
        port.inference(np.array([[1, 6561]]), None, ptok, None, pfeat, xvec)
    with pytest.raises(ValueError, match=r"\[0, 6560\]"):
        port.inference(np.array([[-1, 3]]), None, ptok, None, pfeat, xvec)
    with pytest.raises(ValueError, match="empty"):
        port.inference(np.zeros((1, 0), np.int64), None, ptok, None, pfeat, xvec)
    with pytest.raises(ValueError, match="noise"):
        port.inference(tok, None, ptok, None, pfeat, xvec, noise=np.zeros((1, 80, 3), np.float32))
    with pytest.raises(ValueError, match="embedding"):
        port.inference(tok, None, ptok, None, pfeat, xvec[:, :10])
    with pytest.raises(ValueError, match="meanflow"):
        port.inference(tok, None, ptok, None, pfeat, xvec, meanflow=True)


def test_half_precision_runs(standard):
    """bfloat16/float16 weights run end to end (documented, not parity-tested): finite float32
    mel close to the float32 result."""
    import mlx.core as mx
    from mlx.utils import tree_map

    flow_t, port = standard
    tok, ptok, pfeat, xvec = flow_inputs(10, 5, 5)
    noise = np.random.default_rng(0).standard_normal((1, 80, 30)).astype(np.float32)
    ref = np.array(port.inference(tok, None, ptok, None, pfeat, xvec, noise=noise, n_timesteps=2))
    for dt in (mx.bfloat16, mx.float16):
        half = F.CausalMaskedDiffWithXvec()
        half.update(tree_map(lambda a: a.astype(dt), port.parameters()))
        mel = half.inference(tok, None, ptok, None, pfeat, xvec, noise=noise, n_timesteps=2)
        assert mel.dtype == mx.float32
        mel = np.array(mel)
        assert np.all(np.isfinite(mel))
        rel = np.abs(mel - ref).max() / np.abs(ref).max()
        assert rel < 0.1, (dt, rel)


def test_fast_elementwise_ops_match_torch():
    """The arithmetic-only exp/erf behind softmax, exact GELU and Mish stay at float32 accuracy."""
    import mlx.core as mx

    xs = np.concatenate([np.linspace(-30, 30, 200001), [-1e10, -100.0, 0.0, 1e-30, 50.0, 1e4]]).astype(np.float32)
    xt = torch.from_numpy(xs).double()
    xm = mx.array(xs)
    gelu = np.array(FM.gelu(xm)).astype(np.float64)
    assert np.abs(gelu - torch.nn.functional.gelu(xt).numpy()).max() < 2e-6
    mish = np.array(FM.mish(xm)).astype(np.float64)
    ref = torch.nn.functional.mish(xt).numpy()
    assert np.all(np.abs(mish - ref) <= 4e-7 * np.maximum(1.0, np.abs(ref)))
    ex = xs[np.abs(xs) < 80]
    e = np.array(FM.fast_exp(mx.array(ex))).astype(np.float64)
    assert np.max(np.abs(e - np.exp(ex.astype(np.float64))) / np.exp(ex.astype(np.float64))) < 2e-7
    assert float(FM.fast_exp(mx.array([-1e10], mx.float32))[0]) == 0.0
    s = np.random.default_rng(0).standard_normal((2, 8, 37, 37)).astype(np.float32) * 8
    s[..., 5] = -1e10  # masked key
    sm = np.array(FM.softmax(mx.array(s))).astype(np.float64)
    assert np.abs(sm - torch.softmax(torch.from_numpy(s).double(), -1).numpy()).max() < 1e-6


def _original_mel(flow_t, tok, ptok, pfeat, xvec, seed, **kw):
    with torch.inference_mode():
        torch.manual_seed(seed)
        mel, _ = flow_t.inference(
            token=torch.from_numpy(tok), token_len=torch.tensor([tok.shape[1]]),
            prompt_token=torch.from_numpy(ptok), prompt_token_len=torch.tensor([ptok.shape[1]]),
            prompt_feat=torch.from_numpy(pfeat), prompt_feat_len=None,
            embedding=torch.from_numpy(xvec), **kw)
    return mel.numpy()


def test_not_finalized_and_noised_mels(standard, meanflow):
    """finalize=False fails in chatterbox 0.1.7 itself (h is cut, its mask is not), so the port
    refuses it; meanflow's `noised_mels` (the generated part of z replaced, as chatterbox's
    S3Token2Wav.flow_inference passes it) matches."""
    flow_t, port = standard
    tok, ptok, pfeat, xvec = flow_inputs(20, 10, 21)
    with pytest.raises(RuntimeError):
        _original_mel(flow_t, tok, ptok, pfeat, xvec, 3, finalize=False, n_timesteps=2)
    with pytest.raises(ValueError, match="finalize"):
        port.inference(tok, None, ptok, None, pfeat, xvec, finalize=False, n_timesteps=2)

    flow_t, port = meanflow
    torch.manual_seed(4)
    z = torch.randn(1, 80, 60).numpy()
    noised = np.random.default_rng(4).standard_normal((1, 80, 40)).astype(np.float32)
    ref = _original_mel(flow_t, tok, ptok, pfeat, xvec, 4, finalize=True, n_timesteps=2,
                        noised_mels=torch.from_numpy(noised), meanflow=True)
    mel = np.array(port.inference(tok, None, ptok, None, pfeat, xvec, noise=z, noised_mels=noised))
    assert np.abs(mel - ref).max() < 1e-4
    with pytest.raises(ValueError, match="meanflow"):
        port.inference(tok, None, ptok, None, pfeat, xvec, meanflow=False)
