"""Public names of a port package, imported from their submodules on first use.

Importing ``ports.<port>`` must stay cheap and side-effect free (no torch, no BLAS preload, no
MLX/MAX): the frameworks load when a model or function is first touched.
"""
from __future__ import annotations

import importlib
from typing import Callable


def exports(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule
    (relative to ``package``) that defines it, or to ``"submodule:attribute"`` when it is
    defined there under another name."""

    def __getattr__(name: str):
        try:
            module, _, attr = names[name].partition(":")
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), attr or name)

    def __dir__() -> list[str]:
        return sorted(set(names) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__
