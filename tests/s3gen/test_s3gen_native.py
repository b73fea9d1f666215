"""The CPU paths of the s3gen port: the C++ ResBlock (``resblock.cpp``, the CPU default) against
the compiled MLX ResBlock it replaces, and the parity of the vocoder and the flow with each CPU
path switched off (no C++ kernels; no concurrent streams), so every fallback stays tested."""
import numpy as np
import pytest

from ports.common import blas, mlx_layers
from ports.s3gen import hift
from ports.s3gen.hift import ResBlock, mx
from ports_parity.common.parity import ParityReport

pytestmark = pytest.mark.skipif(mlx_layers.on_gpu(), reason="CPU paths")


def _block(c, k, seed):
    from mlx.utils import tree_flatten, tree_unflatten

    rng = np.random.default_rng(seed)
    rb = ResBlock(c, k, [1, 3, 5])
    rb.update(tree_unflatten([(n, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
                              for n, v in tree_flatten(rb.parameters())]))
    return rb, rng


@pytest.mark.parametrize("c,k,t,b", [(64, 3, 1, 1), (64, 11, 37, 2), (32, 7, 100, 1),
                                     (128, 7, 13, 1)])
def test_resblock_matches_mlx(c, k, t, b):
    """Tile remainders (T not a multiple of 6), padding wider than T, batch > 1."""
    lib = hift.native_resblock()
    assert lib is not None, "the set-up installs g++: the native ResBlock must build here"
    rb, rng = _block(c, k, t)
    x = mx.array(rng.normal(0, 1, (b, t, c)).astype(np.float32))
    _close(rb(x), rb._mlx(x))
    # a load replaces the arrays: the packed weights follow
    rb.convs1[0].weight = rb.convs1[0].weight * 0.5
    _close(rb(x), rb._mlx(x))


def _close(got, want):
    """float32 rounding of sums over k * C (up to 1408) products in another order, relative to
    the output's scale: ~sqrt(k C) * 6e-8."""
    got, want = np.array(got), np.array(want)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 4e-6, err


def test_unsupported_channels_use_mlx():
    rb, rng = _block(24, 3, 0)
    x = mx.array(rng.normal(0, 1, (1, 20, 24)).astype(np.float32))
    assert np.array_equal(np.array(rb(x)), np.array(rb._mlx(x)))


@pytest.mark.parametrize("native,streams", [(False, True), (False, False)])
def test_hift_parity_on_fallback_paths(monkeypatch, native, streams):
    from ports_parity.s3gen.parity import hift_parity

    if not native:
        monkeypatch.setattr(hift, "native_resblock", lambda: None)
    if not streams:
        monkeypatch.setattr(mlx_layers, "cpu_streams", lambda n=2: None)
    rep = hift_parity(n_frames=40, seed=0, report=ParityReport("s3gen"))
    rep.assert_passed()


def test_blas_threads_restored():
    ctl = blas._thread_controls()
    if ctl is None:
        pytest.skip("no OpenBLAS/MKL thread control in this process's BLAS")
    before = ctl[0]()
    with blas.threads(1):
        assert ctl[0]() == 1
    assert ctl[0]() == before
