import numpy as np

from ports.common import blas


def test_blas_preloaded_before_mlx():
    path = blas.preload_blas()
    assert path is not None, f"no optimized BLAS found among {blas.candidates()}"


def test_stable_reductions_match_float64():
    from ports.common import mlx_ops
    import mlx.core as mx

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((2, 3, 160000)) + 0.1).astype(np.float32)
    x64 = x.astype(np.float64)
    xm = mx.array(x)
    np.testing.assert_allclose(np.array(mlx_ops.mean(xm, -1)), x64.mean(-1), rtol=2e-6)
    np.testing.assert_allclose(np.array(mlx_ops.var(xm, -1)), x64.var(-1), rtol=2e-6)
    np.testing.assert_allclose(np.array(mlx_ops.mean(xm, 1)), x64.mean(1), rtol=1e-5, atol=1e-7)
    c = np.array(mlx_ops.cumsum(xm[:, :, :20000], -1))
    np.testing.assert_allclose(c, np.cumsum(x64[:, :, :20000], -1), atol=2e-3)
    w, b = mx.array([1.0, 2.0, 0.5]), mx.array([0.0, 1.0, -1.0])
    y = np.array(mlx_ops.instance_norm(xm, w, b))
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    ref = ref * np.array([1, 2, 0.5])[:, None] + np.array([0, 1, -1])[:, None]
    np.testing.assert_allclose(y, ref, atol=2e-5)


def test_sums_of_long_constant_runs_match_float64():
    """A zero-padded chunk after a norm and a conv is one value repeated ~5000 times; a sequential
    float32 sum rounds the same way at every step (2e-5 off for a 512-block), torch's is ~5e-8."""
    from ports.common import mlx_ops
    import mlx.core as mx

    rng = np.random.default_rng(1)
    x = np.full((4, 80, 5325), 0.17500469, np.float32)
    x[..., :33] = rng.uniform(0.1, 1.8, (4, 80, 33)).astype(np.float32)
    x64 = x.astype(np.float64)
    xm = mx.array(x)
    np.testing.assert_allclose(np.array(mlx_ops.mean(xm, -1)), x64.mean(-1), rtol=5e-7)
    np.testing.assert_allclose(np.array(mlx_ops.var(xm, -1)), x64.var(-1), rtol=1e-6)


def test_mlx_strict_loading_names_keys():
    import mlx.nn as nn
    import pytest

    from ports.common.convert import ConversionError, KeyMap, Rule, transpose
    from ports.common.mlx_weights import convert_into, load_into, param_shapes

    m = nn.Sequential(nn.Linear(3, 4), nn.Conv1d(2, 5, 3))
    assert param_shapes(m, "p.")["p.layers.1.weight"] == (5, 3, 2)
    src = {"a.weight": np.ones((4, 3)), "a.bias": np.zeros(4), "c.weight": np.ones((5, 2, 3)), "c.bias": np.zeros(5)}
    km = KeyMap([Rule(r"a\.(.*)", r"p.layers.0.\1"), Rule(r"c\.weight", "p.layers.1.weight", transpose(0, 2, 1)),
                 Rule(r"c\.bias", "p.layers.1.bias")])
    convert_into(m, km, src, prefix="p.")
    assert np.array(m.layers[1].weight).dtype == np.float32
    with pytest.raises(ConversionError, match="layers.1.bias") as ei:
        load_into(m, {"p.layers.0.weight": np.ones((4, 3)), "p.layers.0.bias": np.ones(4), "p.extra": np.ones(1)},
                  prefix="p.")
    assert "extra" in str(ei.value)


def test_preload_binds_torch_to_its_own_blas_first():
    # torch imported after a global OpenBLAS binds its exported MKL symbols to OpenBLAS (19x
    # slower convolutions/attention here): preload_blas must import torch first when installed.
    import subprocess
    import sys

    code = ("import sys; from ports.common.blas import preload_blas; preload_blas(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
