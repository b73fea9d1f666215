"""Whisper checkpoints -> openai-whisper state dict (numpy, float32) + dims.

Readers for the three formats Whisper weights ship in:
(a) openai ``.pt`` (``{"dims": ..., "model_state_dict": ...}``) through the restricted unpickler,
(b) Hugging Face transformers ``openai/whisper-*`` (``config.json`` + safetensors),
(c) CTranslate2 / faster-whisper model folders (``model.bin`` + ``config.json``).
Every format maps onto openai's own parameter names with a strict key map, so a missing,
unexpected or wrongly shaped tensor is an error naming it.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from ports.common.convert import (ConversionError, Drop, KeyMap, Rule, check_keys,
                                  load_state_dict, read_safetensors, save_safetensors)
from ports.common.unpickle import restricted_load

from .config import WhisperDims, whisper_shapes

FORMAT_TAG = "whisper_max/openai-state-dict/v1"


def _f32(d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in d.items()}


def check_whisper(dims: WhisperDims, sd: Mapping[str, np.ndarray], what: str) -> dict:
    try:
        check_keys(sd, whisper_shapes(dims), what=what)
    except ConversionError as e:
        wrong = dims_disagreeing(dims, sd)
        if not wrong:
            raise
        raise ConversionError(e.missing, e.unexpected, e.mismatched, e.duplicate,
                              what + " (" + "; ".join(wrong) + ")") from None
    return _f32(sd)


def dims_disagreeing(dims: WhisperDims, sd: Mapping[str, np.ndarray]) -> list[str]:
    """The model dimensions the weights contradict, read off the tensors that define them,
    e.g. ``n_audio_state is 128 in the config, 64 in the weights``."""
    seen: dict[str, int] = {}

    def shape(key, axis, name):
        if key in sd and np.ndim(sd[key]) > axis:
            seen.setdefault(name, int(np.shape(sd[key])[axis]))

    shape("encoder.conv1.weight", 0, "n_audio_state")
    shape("encoder.conv1.weight", 1, "n_mels")
    shape("encoder.positional_embedding", 0, "n_audio_ctx")
    shape("decoder.token_embedding.weight", 0, "n_vocab")
    shape("decoder.token_embedding.weight", 1, "n_text_state")
    shape("decoder.positional_embedding", 0, "n_text_ctx")
    for side, name in (("encoder", "n_audio_layer"), ("decoder", "n_text_layer")):
        layers = {int(k.split(".")[2]) for k in sd
                  if k.startswith(f"{side}.blocks.") and k.split(".")[2].isdigit()}
        if layers:
            seen[name] = max(layers) + 1
    return [f"{k} is {getattr(dims, k)} in the config, {v} in the weights"
            for k, v in seen.items() if getattr(dims, k) != v]


# ------------------------------------------------------------------ (a) openai .pt
def load_openai(path: str | Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    path = Path(path)
    obj = restricted_load(path)
    if not isinstance(obj, Mapping) or "dims" not in obj or "model_state_dict" not in obj:
        raise ConversionError(missing=[k for k in ("dims", "model_state_dict")
                                       if not isinstance(obj, Mapping) or k not in obj],
                              what=f"openai Whisper checkpoint {path}")
    dims = WhisperDims.from_dict(obj["dims"])
    sd = {k: np.asarray(v) for k, v in obj["model_state_dict"].items()}
    return dims, check_whisper(dims, sd, f"openai Whisper checkpoint {path}")


# ------------------------------------------------------------------ (b) HF transformers
def _hf_map(prefix: str) -> KeyMap:
    p = prefix.replace(".", r"\.")
    layer = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
             "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
             "self_attn_layer_norm": "attn_ln",
             "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
             "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
             "encoder_attn_layer_norm": "cross_attn_ln",
             "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
    rules = [
        Rule(rf"{p}encoder\.(conv[12])\.(weight|bias)", r"encoder.\1.\2"),
        Rule(rf"{p}encoder\.embed_positions\.weight", "encoder.positional_embedding"),
        Rule(rf"{p}encoder\.layer_norm\.(weight|bias)", r"encoder.ln_post.\1"),
        Rule(rf"{p}decoder\.embed_tokens\.weight", "decoder.token_embedding.weight"),
        Rule(rf"{p}decoder\.embed_positions\.weight", "decoder.positional_embedding"),
        Rule(rf"{p}decoder\.layer_norm\.(weight|bias)", r"decoder.ln.\1"),
        # The output projection is tied to the token embedding in openai's model.
        Drop(r"proj_out\.weight"),
    ]
    for hf, oa in layer.items():
        rules.append(Rule(rf"{p}(encoder|decoder)\.layers\.(\d+)\.{re.escape(hf)}\.(weight|bias)",
                          rf"\1.blocks.\2.{oa}.\3"))
    return KeyMap(rules, what="HF transformers Whisper checkpoint")


def dims_from_hf_config(cfg: Mapping) -> WhisperDims:
    try:
        return WhisperDims(
            n_mels=cfg["num_mel_bins"], n_audio_ctx=cfg["max_source_positions"],
            n_audio_state=cfg["d_model"], n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"], n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg["max_target_positions"], n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"], n_text_layer=cfg["decoder_layers"])
    except KeyError as e:
        raise ValueError(f"HF Whisper config.json lacks {e.args[0]!r}") from None


def load_hf(folder: str | Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: HF Whisper folder has no config.json")
    dims = dims_from_hf_config(json.loads(cfg_path.read_text()))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights (only safetensors are read)")
    src: dict[str, np.ndarray] = {}
    for f in files:
        src.update(read_safetensors(f)[0])
    prefix = "model." if any(k.startswith("model.") for k in src) else ""
    sd = _hf_map(prefix).apply(src, expected=whisper_shapes(dims))
    return dims, _f32(sd)


# ------------------------------------------------------------------ (c) CTranslate2
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """CTranslate2 ``model.bin``: (spec name, variables, aliases). Binary version 6 layout:
    u32 version, string spec name, u32 revision, u32 count, then per variable: string name,
    u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, data; then u32 count of
    (alias, target) string pairs. Strings are u16 length (incl. NUL) + bytes + NUL."""
    path = Path(path)
    b = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(b):
            raise ValueError(f"{path}: truncated CTranslate2 model (at byte {pos})")
        v = struct.unpack_from("<" + fmt, b, pos)
        pos += size
        return v[0]

    def string():
        nonlocal pos
        n = take("H")
        s = b[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version} (only 6 is read)")
    spec = string()
    take("I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unsupported dtype id {dtype_id} "
                             "(bfloat16)")
        if pos + nbytes > len(b):
            raise ValueError(f"{path}: truncated CTranslate2 model (variable {name})")
        arr = np.frombuffer(b, _CT2_DTYPES[dtype_id], nbytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize,
                            pos).reshape(shape)
        pos += nbytes
        variables[name] = arr.copy()
    aliases = {}
    for _ in range(take("I")):
        alias = string()
        aliases[alias] = string()
    return spec, variables, aliases


def _split_fused(v: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Unfuse CT2's [q; k; v] and [k; v] projections. openai's key projection has no bias, so
    the key slot of the fused bias must be zero."""
    out = {}
    for name, arr in v.items():
        parts = None
        if name.endswith("self_attention/linear_0/weight") or name.endswith("self_attention/linear_0/bias"):
            parts = ("q", "k", "v")
        elif "/attention/linear_1/" in name:
            parts = ("k", "v")
        if parts is None:
            out[name] = arr
            continue
        if arr.shape[0] % len(parts):
            raise ConversionError(mismatched=[(name, arr.shape, ("multiple of", len(parts)))], what=what)
        for tag, piece in zip(parts, np.split(arr, len(parts), axis=0)):
            if tag == "k" and name.endswith("/bias"):
                if np.any(piece != 0):
                    raise ValueError(f"{what}: {name} has a non-zero key bias; openai Whisper's "
                                     "key projection has none")
                continue
            out[f"{name}#{tag}"] = piece
    return out


def _ct2_map() -> KeyMap:
    L = r"(encoder|decoder)/layer_(\d+)"
    W = r"(weight|bias)"
    return KeyMap([
        Rule(r"encoder/(conv[12])/(weight|bias)", r"encoder.\1.\2"),
        Rule(r"(encoder|decoder)/position_encodings/encodings", r"\1.positional_embedding"),
        Rule(r"encoder/layer_norm/gamma", "encoder.ln_post.weight"),
        Rule(r"encoder/layer_norm/beta", "encoder.ln_post.bias"),
        Rule(r"decoder/layer_norm/gamma", "decoder.ln.weight"),
        Rule(r"decoder/layer_norm/beta", "decoder.ln.bias"),
        Rule(r"decoder/embeddings/weight", "decoder.token_embedding.weight"),
        Rule(rf"{L}/self_attention/layer_norm/gamma", r"\1.blocks.\2.attn_ln.weight"),
        Rule(rf"{L}/self_attention/layer_norm/beta", r"\1.blocks.\2.attn_ln.bias"),
        Rule(rf"{L}/self_attention/linear_0/{W}#q", r"\1.blocks.\2.attn.query.\3"),
        Rule(rf"{L}/self_attention/linear_0/{W}#k", r"\1.blocks.\2.attn.key.\3"),
        Rule(rf"{L}/self_attention/linear_0/{W}#v", r"\1.blocks.\2.attn.value.\3"),
        Rule(rf"{L}/self_attention/linear_1/{W}", r"\1.blocks.\2.attn.out.\3"),
        Rule(rf"{L}/attention/layer_norm/gamma", r"\1.blocks.\2.cross_attn_ln.weight"),
        Rule(rf"{L}/attention/layer_norm/beta", r"\1.blocks.\2.cross_attn_ln.bias"),
        Rule(rf"{L}/attention/linear_0/{W}", r"\1.blocks.\2.cross_attn.query.\3"),
        Rule(rf"{L}/attention/linear_1/{W}#k", r"\1.blocks.\2.cross_attn.key.\3"),
        Rule(rf"{L}/attention/linear_1/{W}#v", r"\1.blocks.\2.cross_attn.value.\3"),
        Rule(rf"{L}/attention/linear_2/{W}", r"\1.blocks.\2.cross_attn.out.\3"),
        Rule(rf"{L}/ffn/layer_norm/gamma", r"\1.blocks.\2.mlp_ln.weight"),
        Rule(rf"{L}/ffn/layer_norm/beta", r"\1.blocks.\2.mlp_ln.bias"),
        Rule(rf"{L}/ffn/linear_0/{W}", r"\1.blocks.\2.mlp.0.\3"),
        Rule(rf"{L}/ffn/linear_1/{W}", r"\1.blocks.\2.mlp.2.\3"),
        # Scalar spec options that openai's architecture fixes (checked in load_ct2).
        Drop(r"(encoder|decoder)/num_heads"),
        Drop(r"decoder/(activation|alibi|alibi_use_positive_positions|scale_alibi|"
             r"alignment_heads|alignment_layer|pre_norm|scale_embeddings|"
             r"start_from_zero_embedding)"),
    ], what="CTranslate2 Whisper model")


def _count_layers(v, side):
    idx = {int(m.group(1)) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))}
    return len(idx)


def load_ct2(folder: str | Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    folder = Path(folder)
    f = folder / "model.bin" if folder.is_dir() else folder
    what = f"CTranslate2 Whisper model {f}"
    spec, v, aliases = read_ct2(f)
    if spec != "WhisperSpec":
        raise ValueError(f"{what}: spec {spec!r} is not WhisperSpec")
    if any(k.endswith("weight_scale") for k in v) or any(a.dtype == np.int8 and a.ndim > 0 for a in v.values()):
        raise ValueError(f"{what}: int8-quantized; convert it with --quantization float16 or "
                         "float32 (quantized weights are not the original's)")
    # CTranslate2 stores identical variables once and names the others as aliases.
    for alias, target in aliases.items():
        if target not in v:
            raise ValueError(f"{what}: alias {alias} -> missing variable {target}")
        v[alias] = v[target]
    # openai's output projection is the token embedding (tied): the file must agree.
    proj = v.pop("decoder/projection/weight", None)
    emb = v.get("decoder/embeddings/weight")
    if proj is not None and emb is not None and not np.array_equal(proj, emb):
        raise ValueError(f"{what}: decoder/projection/weight differs from the token embedding; "
                         "openai Whisper ties them")
    try:
        dims = WhisperDims(
            n_mels=int(v["encoder/conv1/weight"].shape[1]),
            n_audio_ctx=int(v["encoder/position_encodings/encodings"].shape[0]),
            n_audio_state=int(v["encoder/conv1/weight"].shape[0]),
            n_audio_head=int(v["encoder/num_heads"]),
            n_audio_layer=_count_layers(v, "encoder"),
            n_vocab=int(v["decoder/embeddings/weight"].shape[0]),
            n_text_ctx=int(v["decoder/position_encodings/encodings"].shape[0]),
            n_text_state=int(v["decoder/embeddings/weight"].shape[1]),
            n_text_head=int(v["decoder/num_heads"]),
            n_text_layer=_count_layers(v, "decoder"))
    except KeyError as e:
        raise ConversionError(missing=[e.args[0]], what=what) from None
    # Spec options that would change the architecture away from openai's.
    for flag, want in (("decoder/alibi", 0), ("decoder/scale_embeddings", 0),
                       ("decoder/pre_norm", 1)):
        if flag in v and int(v[flag]) != want:
            raise ValueError(f"{what}: {flag}={int(v[flag])}, openai Whisper has {want}")
    sd = _ct2_map().apply(_split_fused(v, what), expected=whisper_shapes(dims))
    return dims, _f32(sd)


def ct2_alignment_heads(folder: str | Path) -> list[tuple[int, int]] | None:
    cfg = Path(folder) / "config.json"
    if cfg.is_file():
        heads = json.loads(cfg.read_text()).get("alignment_heads")
        if heads:
            return [tuple(map(int, h)) for h in heads]
    return None


# ------------------------------------------------------------------ our own file + dispatch
def save(dims: WhisperDims, sd: Mapping[str, np.ndarray], path: str | Path) -> None:
    save_safetensors(_f32(sd), path, metadata={"format": FORMAT_TAG,
                                               "dims": json.dumps(dims.to_dict())})


def load_converted(path: str | Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT_TAG or "dims" not in meta:
        raise ValueError(f"{path}: not a whisper_max converted file (no {FORMAT_TAG} metadata); "
                         "for HF weights pass the folder holding config.json")
    dims = WhisperDims.from_dict(json.loads(meta["dims"]))
    return dims, check_whisper(dims, tensors, f"converted Whisper weights {path}")


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "model.bin").is_file():
            return "ct2"
        if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
            return "hf"
        raise ValueError(f"{p}: not a Whisper model folder (expected model.bin for CTranslate2, "
                         "or config.json + *.safetensors for HF transformers)")
    if not p.is_file():
        raise FileNotFoundError(f"Whisper checkpoint not found: {p}")
    if p.name == "model.bin":
        return "ct2"
    if p.suffix == ".safetensors":
        return "converted" if read_safetensors_meta(p).get("format") == FORMAT_TAG else "hf-file"
    return "openai"


def read_safetensors_meta(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        try:
            return json.loads(fh.read(n)).get("__metadata__") or {}
        except ValueError:
            return {}


def load_any(path: str | Path) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    """Dims and the full openai state dict (float32) from any supported local checkpoint."""
    fmt = detect_format(path)
    p = Path(path)
    if fmt == "ct2":
        return load_ct2(p if p.is_dir() else p.parent)
    if fmt == "hf":
        return load_hf(p)
    if fmt == "hf-file":
        return load_hf(p.parent)
    if fmt == "converted":
        return load_converted(p)
    return load_openai(p)


def convert(src: str | Path, dst: str | Path) -> None:
    """Any supported checkpoint -> a float32 safetensors of openai's state dict + dims."""
    dims, sd = load_any(src)
    save(dims, sd, dst)


__all__ = ["load_openai", "load_hf", "load_ct2", "read_ct2", "load_converted", "load_any",
           "convert", "save", "detect_format", "ct2_alignment_heads", "load_state_dict"]
