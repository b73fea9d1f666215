"""ports.common.mlx_layers: arithmetic activations, convs and norms against references."""
import numpy as np
import pytest

from ports.common import mlx_layers as L

mx = L.mx


@pytest.mark.parametrize("fused", [True, False])
def test_arith_activations_match_float64(fused):
    x = np.concatenate([np.linspace(-40, 40, 400_001), [0.0, -0.0, 1e-30, 1e10, -3e38, 3e38]])
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    tanh = mx.compile(L.tanh_arith) if fused else L.tanh_arith
    sig = mx.compile(L.sigmoid_arith) if fused else L.sigmoid_arith
    t = np.array(tanh(mx.array(x))).astype(np.float64)
    s = np.array(sig(mx.array(x))).astype(np.float64)
    assert np.abs(t - np.tanh(x64)).max() < 4e-7
    with np.errstate(over="ignore"):
        assert np.abs(s - 1 / (1 + np.exp(-x64))).max() < 2e-7
    inside = np.abs(x) < 7.9
    assert np.all(np.abs(t[inside]) < 1) and np.all((s >= 0) & (s <= 1))


def test_activations_pick():
    sig, tanh = L.activations(jit=False)
    assert sig is mx.sigmoid and tanh is mx.tanh


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k,dilation,padding,stride,groups", [
    (5, 1, 0, 1, 1), (3, 2, 0, 1, 1), (1, 1, 0, 1, 1), (3, 1, 1, 1, 1), (11, 5, 25, 1, 1),
    (3, 1, 1, 2, 1), (4, 1, 1, 2, 1), (1, 1, 0, 3, 1), (3, 2, 2, 2, 1), (3, 1, 1, 1, 2)])
def test_conv1d_matches_mx_conv1d(batch, k, dilation, padding, stride, groups):
    rng = np.random.default_rng(0)
    conv = L.Conv1d(6, 4, k, stride, padding, dilation, groups)
    conv.weight = mx.array(rng.standard_normal((4, k, 6 // groups)).astype(np.float32))
    conv.bias = mx.array(rng.standard_normal(4).astype(np.float32))
    x = mx.array(rng.standard_normal((batch, 60, 6)).astype(np.float32))
    ref = mx.conv1d(x, conv.weight, stride=stride, dilation=dilation, padding=padding,
                    groups=groups) + conv.bias
    y = conv(x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(np.array(y), np.array(ref), atol=2e-5)


@pytest.mark.parametrize("k,stride,padding", [(16, 8, 4), (11, 5, 3), (7, 3, 2), (16, 4, 0)])
def test_conv_transpose1d_matches_mx(k, stride, padding):
    rng = np.random.default_rng(1)
    conv = L.ConvTranspose1d(6, 4, k, stride, padding)
    conv.weight = mx.array(rng.standard_normal((4, k, 6)).astype(np.float32))
    conv.bias = mx.array(rng.standard_normal(4).astype(np.float32))
    x = mx.array(rng.standard_normal((2, 30, 6)).astype(np.float32))
    ref = mx.conv_transpose1d(x, conv.weight, stride=stride, padding=padding) + conv.bias
    y = conv(x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(np.array(y), np.array(ref), atol=2e-5)


def test_layer_norm_matches_numpy():
    rng = np.random.default_rng(2)
    ln = L.LayerNorm(8, eps=1e-5)
    ln.weight = mx.array(rng.standard_normal(8).astype(np.float32))
    ln.bias = mx.array(rng.standard_normal(8).astype(np.float32))
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    ref = ref * np.array(ln.weight) + np.array(ln.bias)
    np.testing.assert_allclose(np.array(ln(mx.array(x))), ref, atol=2e-6)


def test_conv1d_too_short_is_a_clear_error():
    conv = L.Conv1d(2, 2, 5)
    with pytest.raises(ValueError, match="shorter than its 5-frame kernel"):
        conv(mx.zeros((1, 4, 2)))


def test_linear():
    lin = L.Linear(3, 2)
    lin.weight = mx.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    lin.bias = mx.array([0.5, -0.5])
    np.testing.assert_allclose(np.array(lin(mx.array([[1.0, 1.0, 2.0]]))), [[9.5, -0.5]])


def test_conv_transpose1d_taps_follow_a_weight_load():
    rng = np.random.default_rng(3)
    conv = L.ConvTranspose1d(3, 2, 5, 2, 1)
    x = mx.array(rng.standard_normal((1, 7, 3)).astype(np.float32))
    conv(x)  # arranges the taps of the zero weight
    conv.load_weights([("weight", mx.array(rng.standard_normal((2, 5, 3)).astype(np.float32)))],
                      strict=False)
    ref = mx.conv_transpose1d(x, conv.weight, stride=2, padding=1) + conv.bias
    np.testing.assert_allclose(np.array(conv(x)), np.array(ref), atol=2e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_jit_activations_within_float32_ulps_of_float64(fused):
    """sigmoid_jit/tanh_jit (the CPU-compiled LSTM step's) against float64, in float32 ulps of
    the true value, wherever that is a normal float32: as accurate as libm's."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-100, 100, 400_001), rng.standard_normal(200_000) * 3,
                        np.geomspace(1e-30, 100, 20_000), -np.geomspace(1e-30, 100, 20_000),
                        [0.0, -0.0, 1e10, -1e10, 3e38, -3e38, 87.3, -87.3, 87.4, -87.4]])
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        refs = {"sigmoid": 1 / (1 + np.exp(-x64)), "tanh": np.tanh(x64)}
    for name, fn in (("sigmoid", L.sigmoid_jit), ("tanh", L.tanh_jit)):
        ref = refs[name]
        y = np.array((mx.compile(fn) if fused else fn)(mx.array(x))).astype(np.float64)
        normal = np.abs(ref) >= np.finfo(np.float32).tiny
        ulps = np.abs(y - ref)[normal] / np.spacing(np.abs(ref[normal]).astype(np.float32))
        assert ulps.max() < 2.5 and ulps.mean() < 0.25, (name, ulps.max(), ulps.mean())
        assert np.all(np.abs(y[~normal] - ref[~normal]) < 2e-38), name
    assert np.isnan(np.array(L.sigmoid_jit(mx.array([np.nan], dtype=mx.float32)))).all()


@pytest.mark.parametrize("fused", [True, False])
def test_exp_nonpos_jit_within_float32_ulps_and_zero_when_underflowing(fused):
    """exp_nonpos_jit (the flow's softmax) against float64 on x <= 0: ~1 ulp; exactly 0 from
    n = 126 on (x < -86.99, exp < 2.1e-38), so a -1e10 key-mask bias weighs 0 as in torch."""
    x = np.concatenate([-np.linspace(0, 86.9, 400_001), -np.geomspace(1e-30, 86.9, 20_000),
                        [-0.0, -87.0, -87.3, -87.4, -100.0, -1e10, -3e38]]).astype(np.float32)
    y = np.array((mx.compile(L.exp_nonpos_jit) if fused else L.exp_nonpos_jit)(mx.array(x)))
    ref = np.exp(x.astype(np.float64))
    live = x > -86.9
    ulps = np.abs(y[live] - ref[live]) / np.spacing(ref[live].astype(np.float32))
    assert ulps.max() < 1.1 and ulps.mean() < 0.3, (ulps.max(), ulps.mean())
    assert np.all(y[x <= -87.0] == 0.0)
