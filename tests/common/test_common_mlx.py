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
