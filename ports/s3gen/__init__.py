"""Chatterbox S3Gen (speech tokens -> mel -> 24 kHz waveform) in MLX.

The optimized BLAS must be loaded before the first ``import mlx``, so it happens here, before any
submodule imports MLX.
"""
from ports.common.blas import preload_blas

preload_blas()

__all__ = ["S3Gen", "from_pretrained"]


def __getattr__(name):  # lazy: `ports --help` must not import MLX
    if name == "S3Gen":
        from .model import S3Gen

        return S3Gen
    if name == "from_pretrained":
        from .pipeline import from_pretrained

        return from_pretrained
    raise AttributeError(name)
