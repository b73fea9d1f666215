"""The CPU paths of the s3gen port: the C++ ResBlock and the flow estimator's transformer and
resnet blocks (``resblock.cpp``, ``estimator.cpp``, the CPU defaults) against the compiled MLX
blocks they replace, and the
vocoder's parity with each CPU path switched off (no C++ kernels; no concurrent streams), so every
fallback stays tested (the flow's: tests/s3gen/test_s3gen_flow.py)."""
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


def _tblocks(n, seed):
    from mlx.utils import tree_flatten, tree_unflatten

    from ports.s3gen.flow_decoder import BasicTransformerBlock

    rng = np.random.default_rng(seed)
    blocks = [BasicTransformerBlock(64, 2, 32, 2) for _ in range(n)]
    for tb in blocks:
        tb.update(tree_unflatten([(k, mx.array(rng.normal(0, 0.1, v.shape).astype(np.float32)
                                               + (1.0 if k.endswith("norm1.weight") else 0.0)))
                                  for k, v in tree_flatten(tb.parameters())]))
    return blocks, rng


@pytest.mark.parametrize("b,t", [(1, 1), (2, 37), (3, 70)])
def test_transformer_blocks_match_mlx(b, t):
    """Row splits across threads, key panels padded past T, batches of 1-3."""
    from ports.s3gen import flow_decoder

    assert flow_decoder.native_estimator() is not None
    blocks, rng = _tblocks(3, t)
    x = mx.array(rng.normal(0, 1, (b, t, 64)).astype(np.float32))
    want = x
    for tb in blocks:
        want = tb(want, None)
    _close(flow_decoder.transformer_blocks(blocks, x, None), want)


@pytest.mark.parametrize("cin,t,b", [(320, 37, 2), (256, 1, 1), (64, 7, 3)])
def test_resnet_block_matches_mlx(cin, t, b):
    from mlx.utils import tree_flatten, tree_unflatten

    from ports.s3gen.flow_decoder import CausalResnetBlock1D

    rng = np.random.default_rng(t)
    rb = CausalResnetBlock1D(cin, 64, 96)
    rb.update(tree_unflatten([(k, mx.array(rng.normal(0, 0.1, v.shape).astype(np.float32)))
                              for k, v in tree_flatten(rb.parameters())]))
    x = mx.array(rng.normal(0, 1, (b, t, cin)).astype(np.float32))
    temb = mx.array(rng.normal(0, 1, (b, 96)).astype(np.float32))
    _close(rb(x, None, temb), rb._mlx(x, None, temb))
    mask = mx.ones((b, t, 1))  # a mask: the MLX block
    assert np.array_equal(np.array(rb(x, mask, temb)), np.array(rb._mlx(x, mask, temb)))


def test_transformer_blocks_with_bias_use_mlx():
    from ports.s3gen import flow_decoder

    blocks, rng = _tblocks(1, 0)
    x = mx.array(rng.normal(0, 1, (1, 5, 64)).astype(np.float32))
    bias = mx.array([[[[0.0, 0.0, 0.0, -1e10, -1e10]]]])
    assert np.array_equal(np.array(flow_decoder.transformer_blocks(blocks, x, bias)),
                          np.array(blocks[0](x, bias)))


def test_blas_threads_restored():
    ctl = blas._thread_controls()
    if ctl is None:
        pytest.skip("no OpenBLAS/MKL thread control in this process's BLAS")
    before = ctl[0]()
    with blas.threads(1):
        assert ctl[0]() == 1
    assert ctl[0]() == before
