"""The C++ BiLSTM layer (``bilstm.cpp``, the CPU default) against the pure-MLX step it replaces:
the same activations bit for bit, the same layer outputs to float32 rounding of the dot products,
the same labels. Its parity with pyannote itself is ``test_stages`` (the default path)."""
import numpy as np
import pytest

from ports.common import mlx_layers
from ports.pyannote_mlx import model
from ports.pyannote_mlx.model import BiLSTM, mx

pytestmark = pytest.mark.skipif(mlx_layers.on_gpu(), reason="the C++ layer is the CPU path")


@pytest.fixture(scope="module")
def lib():
    lib = model.native_lstm()
    assert lib is not None, "the set-up installs g++: the native layer must build here"
    return lib


def test_activations_bitwise_equal_mlx_jit(lib):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, 200_000), np.linspace(-100, 100, 200_001),
                        [0.0, -0.0, 0.55, -0.55, 87.4, -87.4, 1e-30, -1e-30, 1e4, -1e4]])
    x = x.astype(np.float32)
    sig, tnh = np.empty_like(x), np.empty_like(x)
    lib.bilstm_activations(model._f32(x), model._f32(sig), model._f32(tnh), x.size)
    s2, t2 = mx.compile(lambda a: (mlx_layers.sigmoid_jit(a), mlx_layers.tanh_jit(a)))(mx.array(x))
    assert np.array_equal(sig, np.array(s2)) and np.array_equal(tnh, np.array(t2))


def _lstm(hidden=128, n_in=60, layers=2, seed=1):
    from mlx.utils import tree_flatten, tree_unflatten

    rng = np.random.default_rng(seed)
    lstm = BiLSTM(n_in, hidden, layers)
    lstm.update(tree_unflatten([(k, mx.array(rng.normal(0, 0.15, v.shape).astype(np.float32)))
                                for k, v in tree_flatten(lstm.parameters())]))
    return lstm, rng


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 8, 33])
def test_layer_matches_mlx_step(lib, monkeypatch, batch):
    """Every row-tile case of the kernel (batch rows in tiles of 4, remainders 1-3)."""
    lstm, rng = _lstm()
    x = mx.array(rng.normal(0, 1, (batch, 97, 60)).astype(np.float32))
    out = {}
    for kind in ("native", "jit"):
        monkeypatch.setattr(BiLSTM, "step_kind", kind)
        out[kind] = np.array(lstm(x))
    assert out["native"].shape == (batch, 97, 256)
    np.testing.assert_allclose(out["native"], out["jit"], rtol=0, atol=1e-6)


def test_threads_do_not_change_results(lib):
    rng = np.random.default_rng(2)
    h, t, b = 32, 41, 6
    xp = rng.normal(0, 1, (t, b, 8 * h)).astype(np.float32)
    w = [rng.normal(0, 0.2, (4 * h, h)).astype(np.float32) for _ in range(2)]
    w = [rng.normal(0, 0.2, 4 * h).astype(np.float32) for _ in range(2)] + w
    outs = []
    for threads in (1, 2):
        out = np.empty((2 * h, t, b), np.float32)
        assert lib.bilstm_layer(*(model._f32(a) for a in (xp, *w, out)), h, t, b, threads) == 0
        outs.append(out)
    assert np.array_equal(*outs)


def test_unsupported_hidden_uses_mlx_step(lib, monkeypatch):
    """A hidden size the kernel does not tile (not a multiple of 16) runs the MLX step."""
    lstm, rng = _lstm(hidden=12, n_in=5, layers=1)
    x = mx.array(rng.normal(0, 1, (3, 20, 5)).astype(np.float32))
    a = np.array(lstm(x))
    monkeypatch.setattr(BiLSTM, "step_kind", "jit")
    np.testing.assert_array_equal(a, np.array(lstm(x)))
    h = 12
    bad = np.zeros((1, 1, 8 * h), np.float32)
    assert lib.bilstm_layer(*(model._f32(a) for a in [bad] * 6), h, 1, 1, 1) == 1


def test_forced_native_without_library_is_a_clear_error(monkeypatch):
    lstm, rng = _lstm(hidden=16, n_in=4, layers=1)
    monkeypatch.setattr(model, "native_lstm", lambda: None)
    monkeypatch.setattr(BiLSTM, "step_kind", "native")
    with pytest.raises(RuntimeError, match="native LSTM needs Linux and g.. on PATH"):
        lstm(mx.array(rng.normal(0, 1, (2, 5, 4)).astype(np.float32)))


@pytest.fixture(scope="module")
def fx():
    from ports_parity.pyannote_mlx import parity

    return parity.fixture(64.3)


def test_stages_without_native_kernels(fx, monkeypatch):
    """The pure-MLX path (no g++, AUDIO_PORTS_NATIVE=0, or the GPU's) holds the same bounds."""
    from ports_parity.common.parity import ParityReport
    from ports_parity.pyannote_mlx import parity

    monkeypatch.setattr(model, "_native", lambda name: None)
    assert fx.model.lstm._kind(32) != "native"
    r = ParityReport("pyannote_mlx")
    parity.compare_stages(r, fx.model, fx.orig, fx.chunks)
    r.assert_passed()


def test_sinc_conv_and_norm_match_mlx(fx, monkeypatch):
    """The C++ sinc conv (raw and with |.| + pool) and instance norm against MLX's ops, on odd
    lengths and batches (frame blocks, pooling tails, two threads)."""
    sinc = fx.model.sincnet.conv1d[0]
    norm = fx.model.sincnet.norm1d[0]
    assert sinc.folded() is not None  # converter output: exactly (anti)symmetric filters
    rng = np.random.default_rng(3)
    for b, n in ((1, 160000), (3, 4321), (2, 251), (5, 262)):
        x = mx.array(rng.normal(0, 1, (b, n, 1)).astype(np.float32))
        ref = mx.conv1d(x, sinc.weight, stride=10)
        scale = float(mx.abs(ref).max())
        np.testing.assert_allclose(np.array(sinc(x)), np.array(ref), rtol=0, atol=2e-6 * scale)
        if ref.shape[1] >= 3:
            pooled = sinc(x, pool=True)
            assert np.array_equal(np.array(pooled),
                                  np.array(model._abs_max3(*model._pool3_views(sinc(x)))))
            got = model.norm_leaky_relu(pooled, norm.weight, norm.bias)
            want = model.instance_norm(pooled, norm.weight, norm.bias, leaky=True)
            np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=2e-5)
    y = mx.array(rng.normal(0, 2, (3, 101, 60)).astype(np.float32))
    w, bias = mx.array(rng.normal(1, 0.1, 60).astype(np.float32)), mx.zeros((60,))
    got = model.norm_leaky_relu(y, w, bias, pool=3)
    want = model.instance_norm(model._max3(*model._pool3_views(y)), w, bias, leaky=True)
    assert got.shape == (3, 33, 60)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=2e-5)


def test_asymmetric_filters_use_mlx_conv(fx):
    """Filters that are not exactly [symmetric; antisymmetric] keep mx.conv1d."""
    from ports.pyannote_mlx.model import SincConv

    sc = SincConv(10)
    w = np.array(fx.model.sincnet.conv1d[0].weight)
    w[0, 0, 0] += 1e-3
    sc.weight = mx.array(w)
    assert sc.folded() is None
    x = mx.array(np.random.default_rng(4).normal(0, 1, (2, 3000, 1)).astype(np.float32))
    assert np.array_equal(np.array(sc(x)), np.array(mx.conv1d(x, sc.weight, stride=10)))
