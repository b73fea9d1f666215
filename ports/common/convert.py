"""Checkpoint reading and strict, declarative key maps.

A port's converter is a list of rules over the original's state-dict keys:

    KeyMap([
        Rule(r"sincnet\\.wav_norm1d\\.(weight|bias)", r"sincnet.wav_norm.\\1"),
        Combine(r"lstm\\.bias_ih_l(\\d)", [r"lstm.bias_ih_l\\1", r"lstm.bias_hh_l\\1"],
                r"lstm.\\1.bias", add),
        Drop(r".*\\.num_batches_tracked"),
    ]).apply(state_dict, expected=port_shapes)

Every source key must be consumed by a rule and, when ``expected`` is given, every expected key
produced with its shape. All problems are reported in one ``ConversionError``.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .unpickle import Stub, restricted_load

Array = np.ndarray
Transform = Callable[..., Array]


class ConversionError(ValueError):
    def __init__(self, missing=(), unexpected=(), mismatched=(), duplicate=(), what="checkpoint"):
        self.missing, self.unexpected = sorted(missing), sorted(unexpected)
        self.mismatched, self.duplicate = list(mismatched), sorted(duplicate)
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        if self.mismatched:
            parts.append("shape mismatches: " + ", ".join(
                f"{k} {tuple(got)} != expected {tuple(want)}" for k, got, want in self.mismatched))
        if self.duplicate:
            parts.append(f"keys produced twice: {', '.join(self.duplicate)}")
        super().__init__(f"{what} does not match the model: " + "; ".join(parts))


# ---------------------------------------------------------------- transforms
def transpose(*axes: int) -> Transform:
    return lambda a: np.ascontiguousarray(np.transpose(a, axes or None))


def reshape(*shape: int) -> Transform:
    return lambda a: np.ascontiguousarray(a.reshape(shape))


def squeeze(axis: int) -> Transform:
    return lambda a: np.squeeze(a, axis)


def astype(dtype) -> Transform:
    return lambda a: a.astype(dtype)


def add(a: Array, b: Array) -> Array:
    return a + b


def weight_norm(dim: int = 0) -> Callable[[Array, Array], Array]:
    """torch weight_norm fold: ``g * v / ||v||``, the norm over every axis but ``dim``.

    With the default ``dim=0`` a ConvTranspose1d weight (in, out, k) gets one g per *input*
    channel, exactly as torch computes it.
    """
    def fold(g: Array, v: Array) -> Array:
        v64 = v.astype(np.float64)
        axes = tuple(i for i in range(v.ndim) if i != dim % v.ndim)
        norm = np.sqrt((v64 * v64).sum(axis=axes, keepdims=True))
        return (g.astype(np.float64).reshape(norm.shape) * v64 / norm).astype(v.dtype)
    return fold


def chain(*fns: Callable) -> Callable:
    def run(*arrays):
        out = fns[0](*arrays)
        for fn in fns[1:]:
            out = fn(out)
        return out
    return run


# ---------------------------------------------------------------- rules
@dataclass
class Rule:
    """Source keys fully matching ``pattern`` become ``target`` (a ``re`` template), via ``fn``."""
    pattern: str
    target: str = r"\g<0>"
    fn: Transform | None = None

    def __post_init__(self):
        self.regex = re.compile(self.pattern)


@dataclass
class Drop:
    """Source keys that are knowingly not used (e.g. BatchNorm ``num_batches_tracked``)."""
    pattern: str

    def __post_init__(self):
        self.regex = re.compile(self.pattern)


@dataclass
class Combine:
    """Several source keys make one target: ``pattern`` matches an anchor key, ``inputs`` are
    templates expanded with its groups, ``fn(*arrays)`` builds the target."""
    pattern: str
    inputs: Sequence[str]
    target: str
    fn: Callable[..., Array]

    def __post_init__(self):
        self.regex = re.compile(self.pattern)


@dataclass
class KeyMap:
    rules: list = field(default_factory=list)
    what: str = "checkpoint"

    def __add__(self, other: "KeyMap") -> "KeyMap":
        return KeyMap(self.rules + other.rules, self.what)

    def apply(self, src: Mapping[str, Array],
              expected: Mapping[str, Sequence[int]] | None = None) -> dict[str, Array]:
        out: dict[str, Array] = {}
        consumed: set[str] = set()
        missing: set[str] = set()
        duplicate: set[str] = set()

        def put(key, value):
            if key in out:
                duplicate.add(key)
            out[key] = np.asarray(value)

        for rule in self.rules:
            for key in sorted(src):
                if key in consumed:
                    continue
                m = rule.regex.fullmatch(key)
                if m is None:
                    continue
                if isinstance(rule, Drop):
                    consumed.add(key)
                elif isinstance(rule, Rule):
                    consumed.add(key)
                    put(m.expand(rule.target), rule.fn(src[key]) if rule.fn else src[key])
                else:
                    names = [m.expand(t) for t in rule.inputs]
                    absent = [n for n in names if n not in src]
                    if absent:
                        missing.update(absent)
                        consumed.add(key)
                        continue
                    consumed.update(names)
                    put(m.expand(rule.target), rule.fn(*(src[n] for n in names)))
        unexpected = set(src) - consumed
        mismatched = []
        if expected is not None:
            missing |= set(expected) - set(out)
            unexpected |= {f"{k} (produced)" for k in set(out) - set(expected)}
            mismatched = [(k, out[k].shape, tuple(expected[k])) for k in sorted(out)
                          if k in expected and tuple(out[k].shape) != tuple(expected[k])]
        if missing or unexpected or mismatched or duplicate:
            raise ConversionError(missing, unexpected, mismatched, duplicate, self.what)
        return out


def check_keys(got: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
               what: str = "weights") -> None:
    """Strict load check of already-converted weights against the model's parameter shapes."""
    missing = set(expected) - set(got)
    unexpected = set(got) - set(expected)
    mismatched = [(k, tuple(got[k].shape), tuple(expected[k])) for k in sorted(got)
                  if k in expected and tuple(got[k].shape) != tuple(expected[k])]
    if missing or unexpected or mismatched:
        raise ConversionError(missing, unexpected, mismatched, (), what)


# ---------------------------------------------------------------- files
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Array], dict[str, str]]:
    """safetensors -> numpy, BF16 widened to float32 (numpy has no bfloat16)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
        data = fh.read()
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for key, info in header.items():
        a, b = info["data_offsets"]
        buf = data[a:b]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            arr = np.frombuffer(buf, np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
        out[key] = arr.reshape(info["shape"]).copy()
    return out, meta


def save_safetensors(tensors: Mapping[str, Array], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    # np.ascontiguousarray would turn 0-d arrays (e.g. num_batches_tracked) into shape (1,)
    save_file({k: np.require(np.asarray(v), requirements="C") for k, v in tensors.items()},
              str(path), metadata=dict(metadata or {}))


def _flatten_arrays(obj: Mapping, prefix: str = "") -> dict[str, Array]:
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            out[prefix + str(k)] = v
        elif isinstance(v, Mapping):
            out.update(_flatten_arrays(v, f"{prefix}{k}."))
    return out


def is_safetensors(path: str | os.PathLike) -> bool:
    """By suffix, or by content: 8-byte header length followed by the JSON header's ``{``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load_state_dict(path: str | os.PathLike, *, key: str | None = None,
                    stub_modules: Iterable[str] = ()) -> dict[str, Array]:
    """Tensors of a safetensors file, a torch checkpoint (zip or legacy) or a pickled dict.

    ``key`` selects a sub-dict (e.g. ``"state_dict"`` of a Lightning checkpoint); without it a
    top-level ``state_dict`` entry is used when present. Torch files go through the restricted
    unpickler: classes from ``stub_modules`` load as inert stubs, anything else is refused.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        return read_safetensors(path)[0]
    obj = restricted_load(path, stub_modules=stub_modules)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise KeyError(f"{path}: checkpoint has no entry {key!r}")
        obj = obj[key]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Stub):
        from .unpickle import stub_tree_state_dict

        return stub_tree_state_dict(obj)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return _flatten_arrays(obj)


__all__ = ["ConversionError", "KeyMap", "Rule", "Drop", "Combine", "transpose", "reshape",
           "squeeze", "astype", "add", "weight_norm", "chain", "check_keys", "read_safetensors",
           "save_safetensors", "load_state_dict", "is_safetensors"]
