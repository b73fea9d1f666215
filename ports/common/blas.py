"""Load an optimized BLAS before MLX.

The Linux ``mlx[cpu]`` wheel links the reference BLAS (~5 GFLOP/s here). Its BLAS symbols are
resolved through the global scope, so a library loaded earlier with ``RTLD_GLOBAL`` that exports
``cblas_*`` wins (~125 GFLOP/s with OpenBLAS on 2 cores). This has to happen before the first
``import mlx``; on macOS MLX uses Accelerate and nothing is done.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import sysconfig

_loaded: str | None = None
_done = False

# Search order: explicit env, Debian OpenBLAS (apt libopenblas0-pthread), PyPI mkl (libmkl_rt).
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)


def _pip_mkl() -> list[str]:
    libdir = os.path.join(sysconfig.get_config_var("prefix") or sys.prefix, "lib")
    return sorted(glob.glob(os.path.join(libdir, "libmkl_rt.so*")))


def candidates() -> list[str]:
    env = os.environ.get("AUDIO_PORTS_BLAS", "").strip()
    if env.lower() in ("0", "none", "off", "reference"):
        return []
    found = [env] if env else []
    return found + [p for p in (*_CANDIDATES, *_pip_mkl()) if os.path.exists(p)]


def preload_blas() -> str | None:
    """Load the first available optimized BLAS globally; returns its path (None if none/macOS).

    Warns when ``mlx`` was already imported, because then the reference BLAS is already bound.
    """
    global _loaded, _done
    if _done:
        return _loaded
    _done = True
    if sys.platform != "linux":
        return None
    # libtorch_cpu exports its statically linked MKL (sgemm_, cblas_*). Once a BLAS sits in the
    # global scope, a torch imported later binds those calls to it, nested inside torch's OpenMP
    # threads: measured 19x slower. Importing torch first keeps it bound to its own MKL.
    import importlib.util

    if "torch" not in sys.modules and importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401
    if "mlx.core" in sys.modules:
        import warnings

        warnings.warn("mlx was imported before ports.common.blas.preload_blas(): MLX keeps its "
                      "slow reference BLAS in this process", RuntimeWarning, stacklevel=2)
    for path in candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _loaded = path
        break
    return _loaded


def loaded() -> str | None:
    return _loaded


_thread_fns: tuple | None = None


def _thread_controls():
    """(get, set) of the preloaded BLAS's thread count (OpenBLAS or MKL), or None."""
    global _thread_fns
    if _thread_fns is None:
        _thread_fns = ()
        if _loaded:
            lib = ctypes.CDLL(_loaded)
            for get, put in (("openblas_get_num_threads", "openblas_set_num_threads"),
                             ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads")):
                if hasattr(lib, get) and hasattr(lib, put):
                    getattr(lib, get).restype = ctypes.c_int
                    getattr(lib, put).argtypes = [ctypes.c_int]
                    _thread_fns = (getattr(lib, get), getattr(lib, put))
                    break
    return _thread_fns or None


@contextlib.contextmanager
def threads(n: int):
    """The preloaded BLAS at ``n`` threads inside the block, restored after; nothing where the
    BLAS has no such control. For MLX work spread over CPU streams (one core each): a GEMM that
    also spreads over the cores would fight the other stream."""
    ctl = _thread_controls()
    if ctl is None:
        yield
        return
    get, put = ctl
    before = get()
    put(n)
    try:
        yield
    finally:
        put(before)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op (OpenMP) threads at ``n`` inside the block, restored after (process-wide).
    For another runtime's work between small torch ops: torch's idle OpenMP workers spin-wait
    after each op, and on a small CPU they take the cores that runtime's threads need."""
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def import_mlx():
    """``mlx.core`` with the optimized BLAS preloaded."""
    preload_blas()
    import mlx.core as mx

    return mx
