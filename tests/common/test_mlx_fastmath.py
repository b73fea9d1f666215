"""ports.common.mlx_fastmath: the arithmetic activations against float64, and the MLX compile
switch: off on request, a RuntimeError naming the cause when compilation fails, never silent."""
import numpy as np
import pytest

from ports.common import mlx_fastmath as FM

mx = FM.mx


def test_compile_switch_off_runs_the_plain_function(monkeypatch):
    monkeypatch.setenv(FM.COMPILE_ENV, "0")
    calls = []
    monkeypatch.setattr(FM.mx, "compile", lambda fn: calls.append(fn) or fn)
    x = mx.array(np.linspace(-5, 5, 11, dtype=np.float32))
    y = FM.mlx_compiled(FM.gelu)(x)
    assert not calls
    np.testing.assert_array_equal(np.array(y), np.array(FM.gelu(x)))


def test_compile_failure_is_an_error_naming_the_cause(monkeypatch):
    monkeypatch.delenv(FM.COMPILE_ENV, raising=False)

    def broken(fn):
        raise OSError("no C++ compiler for the CPU JIT")

    monkeypatch.setattr(FM.mx, "compile", broken)
    with pytest.raises(RuntimeError, match=rf"mish.*no C\+\+ compiler.*{FM.COMPILE_ENV}=0") as err:
        FM.mlx_compiled(FM.mish)(mx.zeros((4,)))
    assert isinstance(err.value.__cause__, OSError)


def test_compiled_matches_plain():
    x = mx.array(np.random.default_rng(0).standard_normal((3, 17)).astype(np.float32) * 6)
    for fn in (FM.gelu, FM.mish, FM.softmax):
        np.testing.assert_allclose(np.array(FM.mlx_compiled(fn)(x)), np.array(fn(x)), rtol=1e-6,
                                   atol=1e-7)


def test_arithmetic_transcendentals_at_float32_accuracy():
    """fast_sin/fast_cos/sin_squared (Snake, sine source, ISTFT), tanh (source merge), sigmoid/silu (FFs)
    against float64, within a few float32 ulps; compiled equals plain."""
    xs = np.concatenate([np.linspace(-60, 60, 200001), np.linspace(-5000, 5000, 100001),
                         [0.0, 1e-30, -1e-20, 1e-4]]).astype(np.float32)
    x64 = xs.astype(np.float64)
    xm = mx.array(xs)
    for fn, ref in ((FM.fast_sin, np.sin), (FM.fast_cos, np.cos)):
        y = np.array(fn(xm)).astype(np.float64)
        assert np.abs(y - ref(x64)).max() < 1.5e-7, fn.__name__
    s2 = np.array(FM.sin_squared(xm))
    assert np.abs(s2 - np.sin(x64) ** 2).max() < 2.5e-7
    # the same reduction and polynomial as fast_sin: its square to the bit, except where x / pi
    # is a half-integer to float32 precision and the two roundings pick neighbouring n (r = +-pi/2)
    diff = s2 != np.array(FM.fast_sin(xm)) ** 2
    q = x64 / np.pi
    half = np.abs(np.abs(q - np.round(q)) - 0.5) < 1e-6 + 2.4e-7 * np.abs(q)  # 2 ulp of float32 q
    assert not np.any(diff & ~half)
    np.testing.assert_array_equal(np.array(FM.mlx_compiled(FM.sin_squared)(xm)), s2)
    xs = np.concatenate([np.linspace(-30, 30, 300001), [-1e10, -100.0, 0.0, 1e-30, 1e-6, 100.0, 1e10]]
                        ).astype(np.float32)
    x64 = xs.astype(np.float64)
    xm = mx.array(xs)
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x64))
    for fn, ref in ((FM.tanh, np.tanh(x64)), (FM.sigmoid, sig), (FM.silu, x64 * sig)):
        y = np.array(fn(xm)).astype(np.float64)
        assert np.all(np.isfinite(y)), fn.__name__
        assert np.all(np.abs(y - ref) <= 2e-7 * np.maximum(1.0, np.abs(ref))), fn.__name__
    for fn in (FM.fast_sin, FM.fast_cos, FM.tanh, FM.sigmoid, FM.silu):
        np.testing.assert_array_equal(np.array(FM.mlx_compiled(fn)(xm)), np.array(fn(xm)))


def test_compiled_method_sees_weight_updates_and_switch(monkeypatch):
    import mlx.nn as nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        @FM.compiled_method
        def __call__(self, x, scale=1.0):
            return FM.silu(self.lin(x)) * scale

    m = M()
    x = mx.array(np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32))
    np.testing.assert_allclose(np.array(m(x, 2.0)), np.array(M.__call__.__wrapped__(m, x, 2.0)),
                               rtol=1e-6, atol=1e-7)
    m.lin.weight = m.lin.weight * 3.0
    np.testing.assert_allclose(np.array(m(x)), np.array(M.__call__.__wrapped__(m, x)), rtol=1e-6,
                               atol=1e-7)
    monkeypatch.setenv(FM.COMPILE_ENV, "0")
    monkeypatch.setattr(FM.mx, "compile", lambda *a, **k: pytest.fail("compiled with the switch off"))
    np.testing.assert_array_equal(np.array(m(x)), np.array(M.__call__.__wrapped__(m, x)))
