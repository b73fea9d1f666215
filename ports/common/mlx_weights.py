"""Strict loading of converted numpy weights into MLX modules."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .blas import import_mlx
from .convert import KeyMap, check_keys

mx = import_mlx()


def param_shapes(module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``{prefix + parameter path: shape}`` of an ``mlx.nn.Module``."""
    from mlx.utils import tree_flatten

    return {prefix + k: tuple(v.shape) for k, v in tree_flatten(module.parameters())}


def load_into(module, tensors: Mapping[str, np.ndarray], *, prefix: str = "",
              dtype=None, what: str = "weights") -> None:
    """Load ``tensors`` (keys ``prefix + path``) into ``module``; every key must match exactly.

    ``dtype`` defaults to float32 for floating tensors (integer buffers keep their type).
    """
    dtype = dtype or mx.float32
    n = len(prefix)
    stripped = {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}
    stray = [k for k in tensors if not k.startswith(prefix)]
    check_keys({**stripped, **{k: tensors[k] for k in stray}}, param_shapes(module), what)

    def arr(v):
        v = np.asarray(v)
        return mx.array(v).astype(dtype) if np.issubdtype(v.dtype, np.floating) else mx.array(v)

    module.load_weights([(k, arr(v)) for k, v in stripped.items()], strict=True)
    mx.eval(module.parameters())


def convert_into(module, keymap: KeyMap, src: Mapping[str, np.ndarray], *, prefix: str = "",
                 dtype=None) -> dict[str, np.ndarray]:
    """Apply ``keymap`` to original tensors (strict against the module's shapes) and load them."""
    out = keymap.apply(src, expected=param_shapes(module, prefix))
    load_into(module, out, prefix=prefix, dtype=dtype, what=keymap.what)
    return out
