"""Arithmetic-only float32 activations and their MLX-compiled (fused) forms, for the MLX ports.

MLX's CPU exp/erf/tanh/sin are scalar libm loops (~5-15x slower than torch's vectorised ones);
they dominated the S3Gen flow (softmax over T x T scores, exact-GELU FFs, Mish) and HiFT (Snake,
ISTFT). The versions below use only arithmetic ops, which MLX runs vectorised, at float32 accuracy (checked in the tests):
exp: Cephes expf (max rel. error 8e-8, vs 4e-6 for mx.exp); erf: Eigen's float rational
approximation (max abs. error 4e-7 on [-4, 4], erf = +-1 beyond in float32). Half precision
inputs use MLX's own functions (the tricks are float32 bit-level).

``fused_gelu``, ``fused_mish`` and ``fused_softmax`` run through ``mx.compile``, which fuses the
~25 arithmetic passes (MLX caches the kernels on disk). Compilation needs the C++ compiler of MLX's
CPU JIT. ``AUDIO_PORTS_MLX_COMPILE=0`` turns it off (same functions, uncompiled, slower); with it
on, a failed compilation is a ToolMissing (a RuntimeError) naming the cause, never a silent switch.
"""
from __future__ import annotations

import logging
import math
import os

from .blas import import_mlx
from .errors import ToolMissing
from .mlx_layers import _ROUND, _barrier, exp_nonpos_jit
from .mlx_layers import exp_arith as fast_exp  # noqa: F401 (one definition, in mlx_layers)
from .mlx_layers import sigmoid_arith as sigmoid  # noqa: F401
from .mlx_layers import tanh_arith as tanh  # noqa: F401

mx = import_mlx()

COMPILE_ENV = "AUDIO_PORTS_MLX_COMPILE"
log = logging.getLogger(__name__)


_ERF_A = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_B = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def fast_erf(x):
    """Eigen's rational erf, its polynomials in x^2 in Estrin form and the clamp as a kernel of its
    own: under ``mx.compile`` g++ vectorises it (Horner's 14 levels split MLX's fusion and a
    clamp fused into the arithmetic keeps the loop scalar; 2.7x slower)."""
    if x.dtype != mx.float32:
        return mx.erf(x)
    x = _barrier(mx.clip(x, -4.0, 4.0))
    a, b = _ERF_A, _ERF_B
    y = x * x
    y2 = y * y
    p = (y2 * y2) * (a[0] * y2 + (a[1] * y + a[2])) + (y2 * (a[3] * y + a[4]) + (a[5] * y + a[6]))
    q = (y2 * y2) * b[0] + (y2 * (b[1] * y + b[2]) + (b[3] * y + b[4]))
    return x * p / q


def softmax(s, axis: int = -1):
    """Softmax with ``exp_nonpos_jit`` of the max-shifted scores (vectorised under ``mx.compile``;
    keys masked by a -1e10 bias get exactly 0, as in torch)."""
    if s.dtype != mx.float32:
        return mx.softmax(s, axis=axis, precise=True)
    e = exp_nonpos_jit(s - mx.max(s, axis=axis, keepdims=True))
    return e / mx.sum(e, axis=axis, keepdims=True)


def mish(x):
    # x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2); e^x capped where the ratio is 1
    if x.dtype != mx.float32:
        return x * mx.tanh(mx.logaddexp(x, 0.0))
    e = fast_exp(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


# sin(r) = r + r^3 P(r^2) on [-pi/2, pi/2], fitted for relative error (1.3e-8 in float64)
_SIN_P = (2.6109635400229118e-06, -1.981200254770657e-04, 8.333100398635046e-03, -1.6666660989785437e-01)
# pi = _PI_A + _PI_B + _PI_C (Cephes' DP1..3 times 4): n * _PI_A is exact for |n| < 2^16
_PI_A, _PI_B, _PI_C = 3.140625, 9.67502593994140625e-4, 1.509957990978376432e-7


def _sin_minus(x, m):
    """sin(x - m pi) for x - m pi in about [-pi/2, pi/2]: three-part pi reduction, odd polynomial."""
    r = ((x - m * _PI_A) - m * _PI_B) - m * _PI_C
    r2 = r * r
    p = _SIN_P[0]
    for c in _SIN_P[1:]:
        p = p * r2 + c
    return r + r * r2 * p


def _odd(n):
    return n - 2.0 * mx.floor(n * 0.5)  # 0 or 1 for an integer n


def fast_sin(x):
    """sin in float32, x = n pi + r with a three-part pi, sin x = (-1)^n sin r. Absolute error
    <= 1.3e-7 for |x| <= 5000 (mx.sin: 7.6e-8), growing to ~5e-7 at 5e4 (n * _PI_B rounds)."""
    if x.dtype != mx.float32:
        return mx.sin(x)
    n = mx.floor(x * (1.0 / math.pi) + 0.5)
    return _sin_minus(x, n) * (1.0 - 2.0 * _odd(n))


def fast_cos(x):
    """cos x = (-1)^(n+1) sin r with x = (n + 1/2) pi + r (same reduction as fast_sin)."""
    if x.dtype != mx.float32:
        return mx.cos(x)
    n = mx.floor(x * (1.0 / math.pi))
    return _sin_minus(x, n + 0.5) * (2.0 * _odd(n) - 1.0)


def sin_squared(x):
    """sin(x)^2 in float32 as ``fast_sin(x) ** 2`` (the same reduction and polynomial; no sign
    needed, no floor), ~2x faster than it under ``mx.compile``."""
    if x.dtype != mx.float32:
        s = mx.sin(x)
        return s * s
    # rounding by the +-1.5 * 2**23 trick: mx.floor is a libm call that keeps g++ from vectorising
    n = (x * (1.0 / math.pi) + _ROUND) - _ROUND
    y = _sin_minus(x, n)
    return y * y


def silu(x):
    if x.dtype != mx.float32:
        return x * mx.sigmoid(x)
    return x / (1.0 + fast_exp(-x))


def gelu(x):  # exact (erf) GELU, as torch F.gelu(approximate="none")
    return 0.5 * x * (1.0 + fast_erf(x * (1.0 / math.sqrt(2.0))))


def compile_enabled() -> bool:
    return os.environ.get(COMPILE_ENV, "1") != "0"


def mlx_compiled(fn):
    """``fn`` through ``mx.compile``, built per input dtype on first use and probed there on a tiny
    input (MLX compiles lazily, at eval). ``AUDIO_PORTS_MLX_COMPILE=0``: ``fn`` itself."""
    state = {}

    def run(x, *args, **kw):
        f = state.get(x.dtype)
        if f is None:
            if compile_enabled():
                try:
                    f = mx.compile(fn)
                    mx.eval(f(mx.zeros((2, 3), x.dtype)))
                except Exception as err:
                    raise ToolMissing(
                        f"MLX could not compile {fn.__name__} for {x.dtype} ({type(err).__name__}: "
                        f"{err}). MLX's CPU JIT needs a working C++ compiler; set {COMPILE_ENV}=0 "
                        "to run them uncompiled (slower)") from err
            else:
                log.info("%s=0: %s runs uncompiled", COMPILE_ENV, fn.__name__)
                f = fn
            state[x.dtype] = f
        return f(x, *args, **kw)

    run.__wrapped__ = fn
    run.__name__ = f"fused_{fn.__name__}"
    return run


_compiler_checked = False


def _check_compiler(name: str) -> None:
    """MLX compiles lazily (at eval): probe the CPU JIT once per process on a tiny function, so
    that a missing compiler is an error here, naming ``name``, not deep inside a later eval."""
    global _compiler_checked
    if _compiler_checked:
        return
    try:
        mx.eval(mx.compile(lambda a: a * 2.0 + 1.0)(mx.zeros((2, 3))))
    except Exception as err:
        raise ToolMissing(
            f"MLX could not compile {name} ({type(err).__name__}: {err}). MLX's CPU JIT needs a "
            f"working C++ compiler; set {COMPILE_ENV}=0 to run uncompiled (slower)") from err
    _compiler_checked = True


def compiled_method(method):
    """A Module method run as one ``mx.compile`` graph (elementwise chains fused, fewer ops), built
    per instance on first call with the module's parameters as implicit inputs (later weight
    updates are seen). MLX traces it again for each new input shape, dtype or non-array argument
    (None masks, ints). ``AUDIO_PORTS_MLX_COMPILE=0``: the plain method."""
    attr = f"_compiled_{method.__name__}"

    def run(self, *args):
        if not compile_enabled():
            return method(self, *args)
        f = self.__dict__.get(attr)
        if f is None:
            name = f"{type(self).__name__}.{method.__name__}"
            _check_compiler(name)
            try:
                f = mx.compile(lambda *a: method(self, *a), inputs=self.state)
            except Exception as err:
                raise ToolMissing(f"MLX could not compile {name} ({type(err).__name__}: {err}); "
                                   f"set {COMPILE_ENV}=0 to run uncompiled (slower)") from err
            object.__setattr__(self, attr, f)
        return f(*args)

    run.__wrapped__ = method
    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


fused_gelu = mlx_compiled(gelu)
fused_mish = mlx_compiled(mish)
fused_softmax = mlx_compiled(softmax)
fused_silu = mlx_compiled(silu)
fused_tanh = mlx_compiled(tanh)
fused_sin = mlx_compiled(fast_sin)
fused_cos = mlx_compiled(fast_cos)
fused_exp = mlx_compiled(fast_exp)
