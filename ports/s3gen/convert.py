"""chatterbox S3Gen state dict (``s3gen.safetensors`` / ``s3gen_meanflow.safetensors`` / .pt) ->
MLX safetensors, strictly: every source key is consumed by one of the four parts' rules and every
port parameter is produced with its shape; otherwise one ConversionError names the keys."""
from __future__ import annotations

from ports.common.blas import import_mlx

mx = import_mlx()

from mlx.utils import tree_flatten  # noqa: E402

from ports.common.convert import KeyMap, check_keys  # noqa: E402


def param_shapes(module, prefix: str = "") -> dict:
    return {prefix + k: tuple(v.shape) for k, v in tree_flatten(module.parameters())}


def load_into(module, weights: dict, what: str) -> None:
    """Strict load of converted (port-named) weights into ``module``."""
    check_keys(weights, param_shapes(module), what)
    module.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    mx.eval(module.parameters())


def load_hift(src: dict, cfg=None):
    """HiFTGenerator from a state dict holding exactly the ``mel2wav.*`` keys."""
    from .hift import HIFT_RULES, HiFTGenerator

    model = HiFTGenerator(cfg)
    w = KeyMap(HIFT_RULES, what="mel2wav weights").apply(src, expected=param_shapes(model))
    load_into(model, w, "mel2wav weights")
    return model
