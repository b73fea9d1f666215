"""Arithmetic-only float32 activations for the S3Gen flow, and their MLX-compiled (fused) forms.

MLX's CPU exp/erf/tanh are scalar libm loops (~5-15x slower than torch's vectorised ones) and
dominate the flow (softmax over T x T scores, exact-GELU FFs, Mish). The versions below use only
arithmetic ops, which MLX runs vectorised, at float32 accuracy (checked in the tests):
exp: Cephes expf (max rel. error 8e-8, vs 4e-6 for mx.exp); erf: Eigen's float rational
approximation (max abs. error 4e-7 on [-4, 4], erf = +-1 beyond in float32). Half precision
inputs use MLX's own functions (the tricks are float32 bit-level).

``fused_gelu``, ``fused_mish`` and ``fused_softmax`` run through ``mx.compile``, which fuses the
~25 arithmetic passes (MLX caches the kernels on disk). Compilation needs the C++ compiler of MLX's
CPU JIT. ``AUDIO_PORTS_MLX_COMPILE=0`` turns it off (same functions, uncompiled, slower); with it
on, a failed compilation is a RuntimeError naming the cause, never a silent switch.
"""
from __future__ import annotations

import logging
import math
import os

from ports.common.blas import import_mlx

mx = import_mlx()

COMPILE_ENV = "AUDIO_PORTS_MLX_COMPILE"
log = logging.getLogger(__name__)

_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
          5.0000001201e-1)
_EXP_LO, _EXP_HI = -87.33654, 88.72283


def fast_exp(x):
    if x.dtype != mx.float32:
        return mx.exp(x)
    xc = mx.clip(x, _EXP_LO, _EXP_HI)
    n = mx.floor(xc * 1.44269504088896341 + 0.5)
    r = xc - n * 0.693359375  # Cody-Waite split of ln 2
    r = r - n * -2.12194440e-4
    p = _EXP_P[0]
    for c in _EXP_P[1:]:
        p = p * r + c
    y = p * (r * r) + r + 1.0
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    return mx.where(x < _EXP_LO, 0.0, y * two_n)


_ERF_A = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_B = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def fast_erf(x):
    if x.dtype != mx.float32:
        return mx.erf(x)
    x = mx.clip(x, -4.0, 4.0)
    x2 = x * x
    p = _ERF_A[0]
    for a in _ERF_A[1:]:
        p = p * x2 + a
    q = _ERF_B[0]
    for b in _ERF_B[1:]:
        q = q * x2 + b
    return x * p / q


def softmax(s, axis: int = -1):
    if s.dtype != mx.float32:
        return mx.softmax(s, axis=axis, precise=True)
    e = fast_exp(s - mx.max(s, axis=axis, keepdims=True))
    return e / mx.sum(e, axis=axis, keepdims=True)


def mish(x):
    # x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2); e^x capped where the ratio is 1
    if x.dtype != mx.float32:
        return x * mx.tanh(mx.logaddexp(x, 0.0))
    e = fast_exp(mx.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


def silu(x):
    return x * mx.sigmoid(x)


def gelu(x):  # exact (erf) GELU, as torch F.gelu(approximate="none")
    return 0.5 * x * (1.0 + fast_erf(x * (1.0 / math.sqrt(2.0))))


def leaky_relu(x, slope=0.01):
    return mx.where(x >= 0, x, x * slope)


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
                    raise RuntimeError(
                        f"MLX could not compile {fn.__name__} for {x.dtype} ({type(err).__name__}: "
                        f"{err}). MLX's CPU JIT needs a working C++ compiler; set {COMPILE_ENV}=0 "
                        "to run the S3Gen flow's activations uncompiled (slower)") from err
            else:
                log.info("%s=0: %s runs uncompiled", COMPILE_ENV, fn.__name__)
                f = fn
            state[x.dtype] = f
        return f(x, *args, **kw)

    run.__wrapped__ = fn
    run.__name__ = f"fused_{fn.__name__}"
    return run


fused_gelu = mlx_compiled(gelu)
fused_mish = mlx_compiled(mish)
fused_softmax = mlx_compiled(softmax)
