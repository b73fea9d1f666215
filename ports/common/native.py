"""C++ kernels built at run time, the way MLX builds its own ``mx.compile`` kernels on the CPU.

A kernel ships as a ``.cpp`` source inside the package. On first use it is compiled with the
system ``g++`` for this CPU (``-O3 -march=native``; ``-ffp-contract=off`` so that products and
sums round as written, like MLX's kernels) into the audio-ports cache, keyed by the source, the
compiler and the CPU, and loaded with ctypes. So ``pip install`` needs no build step, and each
machine gets code for its own vector units. Without a compiler, or with
``AUDIO_PORTS_NATIVE=0``, :func:`load` returns None and callers use their pure-MLX path; a
compiler that fails is a warning naming the source, then the same fallback.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-pthread")
INCLUDE = Path(__file__).parent  # native_vec.h, shared by the kernels


def enabled() -> bool:
    return os.environ.get("AUDIO_PORTS_NATIVE", "1").strip().lower() not in ("0", "off", "no",
                                                                          "false")


def compiler() -> str | None:
    if sys.platform != "linux":  # macOS runs MLX on Metal; its CPU path keeps the MLX step
        return None
    return shutil.which(os.environ.get("CXX", "g++"))


@functools.lru_cache(maxsize=None)
def _compiler_id(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _cpu_id() -> str:
    """The CPU model and flags: -march=native code must not move to another CPU via the cache."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n" + "\n".join(keep)


@functools.lru_cache(maxsize=None)
def load(source: str, abi: tuple[str, int] | None = None) -> ctypes.CDLL | None:
    """The shared library built from ``source`` (a path), or None where native code is off.

    ``abi``: (function name, expected int) checked after loading, so a stale build of an older
    interface is never called.
    """
    cxx = compiler()
    if not enabled() or cxx is None:
        return None
    from .hub import cache_dir

    src = Path(source)
    code = src.read_bytes() + b"".join(h.read_bytes() for h in sorted(INCLUDE.glob("*.h")))
    key = hashlib.sha256(b"\0".join([code, _compiler_id(cxx).encode(), " ".join(FLAGS).encode(),
                                     _cpu_id().encode()])).hexdigest()[:20]
    lib = cache_dir("native") / f"{src.stem}-{key}.so"
    if not lib.exists():
        from .atomic import atomic_path

        try:
            with atomic_path(lib) as tmp:
                res = subprocess.run([cxx, *FLAGS, f"-I{INCLUDE}", str(src), "-o", str(tmp)],
                                     capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr else
                                       f"exit {res.returncode}")
        except (OSError, RuntimeError) as err:
            warnings.warn(f"{src.name}: native build failed ({err}); using the MLX path",
                          RuntimeWarning, stacklevel=2)
            return None
    dll = ctypes.CDLL(str(lib))
    if abi is not None:
        fn = getattr(dll, abi[0])
        fn.restype = ctypes.c_int
        if fn() != abi[1]:
            raise RuntimeError(f"{lib}: {abi[0]}() is {fn()}, expected {abi[1]}")
    return dll


F32 = ctypes.POINTER(ctypes.c_float)
I32 = ctypes.POINTER(ctypes.c_int)


def kernels(source: str, abi: int, signatures: dict) -> ctypes.CDLL | None:
    """:func:`load` of ``source`` (``<stem>_abi()`` must return ``abi``) with ``signatures``
    ({function: (argtypes, restype)}) applied, or None (see :func:`load`)."""
    lib = load(source, abi=(f"{Path(source).stem}_abi", abi))
    if lib is not None and not getattr(lib, "_typed", False):
        for fn, (args, res) in signatures.items():
            getattr(lib, fn).argtypes = args
            getattr(lib, fn).restype = res
        lib._typed = True
    return lib


def panels(w) -> "np.ndarray":
    """A weight (out, ...) -> (out / 32, prod(...), 32) float32: W^T in the 32-column panels
    the kernels' GEMM tiles read (a conv's (out, k, in) gives its taps x inputs as the rows)."""
    import numpy as np

    w = np.asarray(w, np.float32)
    n = w.shape[0]
    return np.ascontiguousarray(w.reshape(n // 32, 32, -1).transpose(0, 2, 1))


def f32(a):
    """A float32 numpy array's data as ``float*`` (the caller keeps ``a`` alive)."""
    return a.ctypes.data_as(F32)


def cores() -> int:
    """The cores this process may use (its affinity where the OS has one, e.g. not macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads() -> int:
    """Threads for a kernel call: the cores this process may use, at most 2 (the kernels split
    into two directions or two halves; more cores would need finer splits)."""
    return 2 if cores() >= 2 else 1


__all__ = ["FLAGS", "F32", "I32", "compiler", "cores", "enabled", "f32", "kernels", "load", "panels", "threads"]
