"""Checkpoint converters: fastai v1 export pickle, fastai state dict, HF model_v1 safetensors.

Layouts (port keys are torchvision ResNet names, see model.py):
* fastai ``cnn_learner``: ``0.0`` conv1, ``0.1`` bn1, ``0.4``-``0.7`` layer1-4, head
  ``1.2/1.4/1.6/1.8`` = ``fc.1/fc.3/fc.5/fc.7``.
* HF ``orcasound/orcahello-srkw-detector-v1`` (PyTorchModelHubMixin): ``model.`` + port keys.

The production ``model.pkl`` (``Learner.export``) pickles the whole fastai Learner, whose
``model`` entry is the nn.Module tree. It is read with ``ports.common.unpickle``: torch/fastai/
fastai_audio/torchvision classes become inert stubs, no code from the file runs, and any other
global (``os.system``, ``builtins.eval`` ...) is refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ports.common.convert import (ConversionError, KeyMap, Rule, check_keys, is_safetensors,
                                  read_safetensors, save_safetensors)
from ports.common.unpickle import Stub, restricted_load, stub_tree_state_dict

# Modules whose classes a fastai v1 export may name; they load as inert stubs.
FASTAI_STUB_MODULES = (
    "fastai", "audio", "torchvision", "torch.nn", "torch.optim", "functools", "pathlib",
    "fastprogress", "pandas", "spacy",
)

# fastai v1 cnn_learner layout (body 0.x, head 1.x) <-> torchvision names; one table, both ways.
# fastai's conv1 (0.0) has no bias, so every pair maps whole key suffixes.
FASTAI_PREFIXES = [("0.0.", "conv1."), ("0.1.", "bn1."), ("0.4.", "layer1."), ("0.5.", "layer2."),
                   ("0.6.", "layer3."), ("0.7.", "layer4."), ("1.2.", "fc.1."), ("1.4.", "fc.3."),
                   ("1.6.", "fc.5."), ("1.8.", "fc.7.")]
FASTAI_TO_PORT = KeyMap([Rule(re.escape(a) + "(.+)", b + r"\1") for a, b in FASTAI_PREFIXES],
                        what="fastai state dict")
PORT_TO_FASTAI = KeyMap([Rule(re.escape(b) + "(.+)", a + r"\1") for a, b in FASTAI_PREFIXES],
                        what="port state dict")

HF_TO_PORT = KeyMap([Rule(r"model\.(.+)", r"\1")], what="HF model_v1 state dict")
PORT_TO_HF = KeyMap([Rule(r"(.+)", r"model.\1")], what="port state dict")


def port_shapes(with_nbt: bool = True) -> dict[str, tuple]:
    from .model import OrcaResNet50, param_shapes

    shapes = param_shapes(OrcaResNet50())
    return shapes if with_nbt else {k: v for k, v in shapes.items()
                                    if not k.endswith("num_batches_tracked")}


def _finish(out: dict, expected_full: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """BatchNorm ``num_batches_tracked`` is optional (unused at inference): filled with 0 when a
    checkpoint has none; every other key is strict."""
    if not any(k.endswith("num_batches_tracked") for k in out):
        for k, s in expected_full.items():
            if k.endswith("num_batches_tracked"):
                out[k] = np.zeros(s, np.int64)
    check_keys(out, expected_full, what="converted OrcaHello weights")
    for k, v in out.items():
        if not k.endswith("num_batches_tracked") and v.dtype != np.float32:
            out[k] = v.astype(np.float32)
    return out


def _expected_for(src_has_nbt: bool):
    full = port_shapes(True)
    return full, (full if src_has_nbt else port_shapes(False))


def _scalar_nbt(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # num_batches_tracked is a 0-d tensor; ports.common.convert.save_safetensors writes it as
    # shape (1,) (np.ascontiguousarray makes arrays at least 1-d): accept both
    return {k: (np.asarray(v).reshape(()) if k.endswith("num_batches_tracked")
                and np.asarray(v).size == 1 else v) for k, v in sd.items()}


def _has_nbt(sd: Mapping) -> bool:
    return any(k.endswith("num_batches_tracked") for k in sd)


def fastai_to_port(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = _scalar_nbt(sd)
    full, exp = _expected_for(_has_nbt(sd))
    return _finish(FASTAI_TO_PORT.apply(sd, expected=exp), full)


def hf_to_port(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = _scalar_nbt(sd)
    full, exp = _expected_for(_has_nbt(sd))
    return _finish(HF_TO_PORT.apply(sd, expected=exp), full)


def port_to_fastai(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    check_keys(sd, port_shapes(True), what="port state dict")
    return PORT_TO_FASTAI.apply(sd)


def port_to_hf(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    check_keys(sd, port_shapes(True), what="port state dict")
    return PORT_TO_HF.apply(sd)


def detect_layout(sd: Mapping[str, np.ndarray]) -> str:
    if "model.conv1.weight" in sd:
        return "hf"
    if "0.0.weight" in sd:
        return "fastai"
    if "conv1.weight" in sd:
        return "port"
    raise ConversionError(missing=["conv1.weight | model.conv1.weight | 0.0.weight"],
                          what="OrcaHello checkpoint (unknown layout)")


def to_port(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    layout = detect_layout(sd)
    if layout == "hf":
        return hf_to_port(sd)
    if layout == "fastai":
        return fastai_to_port(sd)
    sd = _scalar_nbt(sd)
    full, exp = _expected_for(_has_nbt(sd))
    return _finish(KeyMap([Rule(r".+")], what="port state dict").apply(sd, expected=exp), full)


def pickle_state_dict(obj, path: str | Path) -> dict[str, np.ndarray]:
    """The state dict held by an unpickled checkpoint: a fastai v1 ``Learner.export()`` (the
    model module inside, as inert stubs), a ``Learner.save()`` file (``{"model": state dict}``),
    a Lightning-style ``{"state_dict": ...}`` or a plain state dict."""
    if isinstance(obj, Mapping) and ("model" in obj or "state_dict" in obj):
        obj = obj.get("model", obj.get("state_dict"))
    if isinstance(obj, Stub):
        return stub_tree_state_dict(obj)
    if isinstance(obj, Mapping) and all(hasattr(v, "shape") for v in obj.values()):
        return {k: np.asarray(v) for k, v in obj.items()}
    raise ValueError(f"{path}: neither a fastai v1 export nor a state dict "
                     f"(top level: {type(obj).__name__})")


def read_fastai_export(path: str | Path) -> dict[str, np.ndarray]:
    """State dict (fastai layout) of a fastai v1 ``Learner.export()`` pickle, without fastai."""
    return pickle_state_dict(restricted_load(path, stub_modules=FASTAI_STUB_MODULES), path)


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Any supported checkpoint -> port state dict (numpy). Strict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        sd = read_safetensors(path)[0]
    else:  # a pickle (fastai export, Learner.save, torch state dict): one reader, no guessing
        sd = read_fastai_export(path)
    return to_port(sd)


def hf_config() -> dict:
    """config.json beside model.safetensors, in upstream model_v1's DetectorInferenceConfig
    form (PyTorchModelHubMixin stores the ``config`` init argument)."""
    from .config import FrontendConfig, ModelConfig

    fe, mc = FrontendConfig(), ModelConfig()
    return {
        "audio": {"downmix_mono": True, "resample_rate": fe.resample_to},
        "spectrogram": {"sample_rate": fe.mel_sample_rate, "n_fft": fe.n_fft,
                        "hop_length": fe.hop_length, "mel_n_filters": fe.n_mels,
                        "mel_f_min": fe.f_min, "mel_f_max": fe.f_max, "mel_f_pad": 0,
                        "convert_to_db": True, "top_db": int(fe.top_db)},
        "model": {"name": "orcahello-srkw-detector-v1", "input_pad_s": fe.duration_ms / 1000,
                  "num_classes": mc.num_classes, "call_class_index": mc.call_class_index},
        "inference": {"window_s": float(fe.window_s), "window_hop_s": float(fe.hop_s),
                      "local_conf_threshold": 0.5, "global_pred_threshold": 3},
    }


def save_hf(sd_port: Mapping[str, np.ndarray], out: str | Path) -> Path:
    """Write ``model.safetensors`` (HF layout) + ``config.json`` into folder ``out`` (or, when
    ``out`` ends in .safetensors, that file with config.json beside it)."""
    out = Path(out)
    if out.suffix == ".safetensors":
        folder, file = out.parent, out
    else:
        folder, file = out, out / "model.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(port_to_hf(sd_port), file, metadata={"format": "pt"})  # as convert_weights
    (folder / "config.json").write_text(json.dumps(hf_config(), indent=2))
    return file


CONVERTER_TAG = "orca-hf-v1"  # the cached_conversion tag: change it when convert_weights() changes


def convert_weights(src: str | Path, dst: str | Path) -> None:
    """Any supported checkpoint -> ``dst`` safetensors in the HF layout (no config.json)."""
    save_safetensors(port_to_hf(load_checkpoint(src)), Path(dst), metadata={"format": "pt"})


def convert(src: str | Path, dst: str | Path) -> None:
    """``ports convert orca_v1 SRC DST``: fastai model.pkl / state dict / HF / port -> HF layout."""
    save_hf(load_checkpoint(src), dst)


__all__ = ["FASTAI_STUB_MODULES", "fastai_to_port", "port_to_fastai", "hf_to_port", "port_to_hf",
           "detect_layout", "to_port", "read_fastai_export", "load_checkpoint", "save_hf",
           "convert", "hf_config", "pickle_state_dict", "CONVERTER_TAG", "convert_weights"]
