"""The MLX compile switch of the flow's fused activations: off on request, a RuntimeError naming the
cause when compilation fails, never a silent uncompiled run."""
import numpy as np
import pytest

from ports.s3gen import fast_math as FM

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
