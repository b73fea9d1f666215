"""chatterbox S3Gen state dict (``s3gen.safetensors`` / ``s3gen_meanflow.safetensors`` / .pt) ->
MLX safetensors, strictly: every source key is consumed by one of the four parts' rules and every
port parameter is produced with its shape; otherwise one ConversionError names the keys."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()

from ports.common.convert import (ConversionError, KeyMap, load_state_dict,  # noqa: E402
                                  read_safetensors, save_safetensors)
from ports.common.mlx_weights import convert_into, load_into, param_shapes  # noqa: E402

from .campplus import campplus_rules  # noqa: E402
from .config import S3GenConfig  # noqa: E402
from .flow import flow_rules  # noqa: E402
from .hift import HiFTGenerator, hift_rules  # noqa: E402
from .model import S3Gen  # noqa: E402
from .tokenizer import tokenizer_rules  # noqa: E402

FORMAT = "ports.s3gen/1"
TAG = "s3gen-mlx-v1"  # cached_conversion tag: bump when the conversion changes
MEANFLOW_KEY = "flow.decoder.estimator.time_embed_mixer.weight"
# S3Gen part (= attribute and state-dict prefix) -> its conversion rules
PART_RULES = {
    "tokenizer": tokenizer_rules,
    "speaker_encoder": campplus_rules,
    "flow": flow_rules,
    "mel2wav": hift_rules,
}


def load_hift(src: dict, cfg=None, prefix: str = "mel2wav."):
    """HiFTGenerator from a state dict holding exactly the ``mel2wav.*`` keys."""
    model = HiFTGenerator(cfg)
    convert_into(model, KeyMap(hift_rules(prefix), what="mel2wav weights"), src, prefix=prefix)
    return model


def s3gen_keymap() -> KeyMap:
    """The four parts' rules over the whole chatterbox S3Gen state dict."""
    rules = []
    for name, factory in PART_RULES.items():
        rules += factory(name + ".")
    return KeyMap(rules, what="S3Gen checkpoint")


def is_meanflow(src: dict) -> bool:
    return MEANFLOW_KEY in src


def convert_state_dict(src: dict, meanflow: bool | None = None) -> tuple[dict, bool]:
    """chatterbox keys -> port keys (numpy float32), strict. Returns (weights, meanflow)."""
    if meanflow is None:
        meanflow = is_meanflow(src)
    model = S3Gen(S3GenConfig(meanflow=meanflow))  # parameters stay lazy: shapes only
    out = s3gen_keymap().apply(src, expected=param_shapes(model))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}, meanflow


def convert(src: str | Path, dst: str | Path, meanflow: bool | None = None) -> Path:
    """Original checkpoint file -> MLX safetensors with ``format``/``meanflow`` metadata."""
    sd = load_state_dict(src)
    w, mf = convert_state_dict(sd, meanflow)
    dst = Path(dst)
    save_safetensors(w, dst, metadata={"format": FORMAT, "meanflow": json.dumps(mf),
                                       "source": Path(src).name})
    return dst


def is_converted(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            head = json.loads(fh.read(n))
    except (OSError, ValueError):
        return False
    return (head.get("__metadata__") or {}).get("format") == FORMAT


def load_converted(path: str | Path, config=None):
    """S3Gen from a converted file (strict: every parameter present with its shape)."""
    w, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a converted S3Gen file (metadata format {meta.get('format')!r})")
    mf = json.loads(meta.get("meanflow", "false"))
    if config is None:
        config = S3GenConfig(meanflow=mf)
    elif config.meanflow != mf:
        raise ValueError(f"{path}: meanflow={mf} weights, but the config asks for meanflow={config.meanflow}")
    model = S3Gen(config)
    load_into(model, w, what=f"converted S3Gen weights {path}")
    return model


__all__ = ["ConversionError", "convert", "convert_state_dict", "load_converted", "load_hift",
           "s3gen_keymap", "is_converted", "is_meanflow"]
