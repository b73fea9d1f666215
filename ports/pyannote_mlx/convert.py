"""pyannote ``pytorch_model.bin`` (Lightning checkpoint) or safetensors -> MLX safetensors.

The checkpoint's ``pyannote.audio`` entry pickles a ``Specifications`` dataclass (and its
``Problem``/``Resolution`` enums), so it is read with the restricted unpickler, pyannote classes
stubbed: no pyannote, no torch needed. Loading is strict: one error lists every missing,
unexpected or mis-shaped key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ports.common.convert import (Combine, ConversionError, KeyMap, Rule, add, check_keys,
                                  is_safetensors, read_safetensors, save_safetensors, transpose)
from ports.common.unpickle import Stub, restricted_load

from .config import (CONV_CHANNELS, CONV_KERNEL, SINC_FILTERS, SINC_KERNEL, SINC_MIN_BAND_HZ,
                     SINC_MIN_LOW_HZ, SegmentationConfig)

FORMAT = "pyannote_mlx"
# 2: the LSTM g-gate rows (weight_ih, weight_hh, bias) are pre-scaled by 2 (see model.BiLSTM).
FORMAT_VERSION = "2"
# Classes that may appear in a checkpoint's pickle, loaded as inert stubs: pyannote's
# Specifications/Problem/Resolution, Lightning containers, and torch.__version__ (a TorchVersion
# str subclass that pyannote 2.x/3.x wrote into its "versions" entry).
STUB_MODULES = ("pyannote", "pytorch_lightning", "lightning", "lightning_fabric",
                "torch.torch_version")


def sinc_filters(low_hz_: np.ndarray, band_hz_: np.ndarray, n_: np.ndarray, window_: np.ndarray,
                 sample_rate: float = 16000.0) -> np.ndarray:
    """asteroid ``ParamSincFB.filters()`` in float32: (80, 1, 251) [cos filters; sin filters]."""
    f32 = np.float32
    low_hz_, band_hz_ = low_hz_.astype(f32), band_hz_.astype(f32)
    n_, window_ = n_.astype(f32), window_.astype(f32)
    low = f32(SINC_MIN_LOW_HZ) + np.abs(low_hz_)
    high = np.clip(low + f32(SINC_MIN_BAND_HZ) + np.abs(band_hz_), f32(SINC_MIN_LOW_HZ),
                   f32(sample_rate / 2)).astype(f32)
    band = (high - low)[:, 0]
    ft_low = low @ n_
    ft_high = high @ n_
    half_n = n_ / f32(2)
    out = []
    for kind in ("cos", "sin"):
        if kind == "cos":
            left = ((np.sin(ft_high) - np.sin(ft_low)) / half_n) * window_
            center = f32(2) * band[:, None]
            right = left[:, ::-1]
        else:
            left = ((np.cos(ft_low) - np.cos(ft_high)) / half_n) * window_
            center = np.zeros_like(band[:, None])
            right = -left[:, ::-1]
        bp = np.concatenate([left, center, right], axis=1)
        out.append(bp / (f32(2) * band[:, None]))
    filt = np.concatenate(out, axis=0).astype(f32)
    if filt.shape != (SINC_FILTERS, SINC_KERNEL):
        raise ConversionError(mismatched=[("sincnet.conv1d.0.filters", filt.shape,
                                           (SINC_FILTERS, SINC_KERNEL))])
    return filt[:, None, :]


def scale_g_rows(a: np.ndarray) -> np.ndarray:
    """LSTM (4H, ...) parameter with its g-gate rows (third quarter, torch order i, f, g, o)
    multiplied by 2: ``tanh(x) = 2 sigmoid(2x) - 1`` lets one sigmoid give all four gates."""
    a = np.array(a, dtype=np.float32, copy=True)
    h = a.shape[0] // 4
    a[2 * h:3 * h] *= np.float32(2)  # exact: a power-of-two scale
    return a


def expected_shapes(cfg: SegmentationConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``model.PyanNet(cfg)`` (MLX layout), without importing MLX."""
    s: dict[str, tuple[int, ...]] = {
        "sincnet.wav_norm1d.weight": (1,), "sincnet.wav_norm1d.bias": (1,),
        "sincnet.conv1d.0.weight": (SINC_FILTERS, SINC_KERNEL, 1),
        "sincnet.conv1d.1.weight": (CONV_CHANNELS, CONV_KERNEL, SINC_FILTERS),
        "sincnet.conv1d.1.bias": (CONV_CHANNELS,),
        "sincnet.conv1d.2.weight": (CONV_CHANNELS, CONV_KERNEL, CONV_CHANNELS),
        "sincnet.conv1d.2.bias": (CONV_CHANNELS,),
    }
    for i, c in enumerate((SINC_FILTERS, CONV_CHANNELS, CONV_CHANNELS)):
        s[f"sincnet.norm1d.{i}.weight"] = (c,)
        s[f"sincnet.norm1d.{i}.bias"] = (c,)
    h = cfg.lstm_hidden
    for k in range(cfg.lstm_layers):
        n_in = CONV_CHANNELS if k == 0 else cfg.lstm_out
        for sfx in ("", "_reverse"):
            s[f"lstm.weight_ih_l{k}{sfx}"] = (4 * h, n_in)
            s[f"lstm.weight_hh_l{k}{sfx}"] = (4 * h, h)
            s[f"lstm.bias_l{k}{sfx}"] = (4 * h,)
    dims = [cfg.lstm_out] + [cfg.linear_hidden] * cfg.linear_layers
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        s[f"linear.{k}.weight"] = (b, a)
        s[f"linear.{k}.bias"] = (b,)
    s["classifier.weight"] = (cfg.dimension, dims[-1])
    s["classifier.bias"] = (cfg.dimension,)
    return s


def key_map(cfg: SegmentationConfig) -> KeyMap:
    def sinc(low, band, n, window):
        return transpose(0, 2, 1)(sinc_filters(low, band, n, window, cfg.sample_rate))

    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    return KeyMap([
        Rule(r"sincnet\.(wav_norm1d|norm1d\.\d)\.(weight|bias)", fn=f32),
        Combine(r"sincnet\.conv1d\.0\.filterbank\.low_hz_",
                ["sincnet.conv1d.0.filterbank.low_hz_", "sincnet.conv1d.0.filterbank.band_hz_",
                 "sincnet.conv1d.0.filterbank.n_", "sincnet.conv1d.0.filterbank.window_"],
                "sincnet.conv1d.0.weight", sinc),
        # torch Conv1d (out, in, k) -> MLX (out, k, in)
        Rule(r"sincnet\.conv1d\.([12])\.weight", fn=lambda a: transpose(0, 2, 1)(f32(a))),
        Rule(r"sincnet\.conv1d\.([12])\.bias", fn=f32),
        Rule(r"lstm\.weight_(ih|hh)_l(\d+)(_reverse)?", fn=scale_g_rows),
        Combine(r"lstm\.bias_ih_l(\d+)(_reverse)?",
                [r"lstm.bias_ih_l\1\2", r"lstm.bias_hh_l\1\2"], r"lstm.bias_l\1\2",
                lambda a, b: scale_g_rows(add(f32(a), f32(b)))),
        Rule(r"(linear\.\d+|classifier)\.(weight|bias)", fn=f32),
    ], what="pyannote segmentation checkpoint")


def _hparams(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Stub):  # e.g. an AttributeDict of an older Lightning
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    raise ValueError(f"checkpoint hyper_parameters of unexpected type {type(obj).__name__}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], SegmentationConfig, bool]:
    """(tensors, config, already_converted) from a pyannote checkpoint or a safetensors file.

    A safetensors file is either this port's own output (``format=pyannote_mlx`` metadata, MLX
    keys) or a pyannote state dict saved as safetensors (original keys; config from its
    ``config`` metadata when present, else segmentation-3.0 defaults).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        tensors, meta = read_safetensors(path)
        cfg = SegmentationConfig.from_json(meta["config"]) if "config" in meta else SegmentationConfig()
        return tensors, cfg, meta.get("format") == FORMAT
    try:
        ck = restricted_load(path, stub_modules=STUB_MODULES)
    except Exception as err:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{path}: cannot read as a pyannote checkpoint: {err}") from err
    if not isinstance(ck, Mapping) or "state_dict" not in ck:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry)")
    pya = ck.get("pyannote.audio")
    if not isinstance(pya, Mapping) or "specifications" not in pya:
        raise ValueError(f"{path}: not a pyannote.audio checkpoint (no 'pyannote.audio' entry)")
    arch = pya.get("architecture") or {}
    if arch.get("class", "PyanNet") != "PyanNet":
        raise ValueError(f"{path}: architecture {arch.get('class')!r} is not PyanNet")
    cfg = SegmentationConfig.from_checkpoint(_hparams(ck.get("hyper_parameters") or {}),
                                             pya["specifications"])
    sd = {k: np.asarray(v) for k, v in ck["state_dict"].items()}
    return sd, cfg, False


def convert_state_dict(sd: Mapping[str, np.ndarray], cfg: SegmentationConfig) -> dict[str, np.ndarray]:
    return key_map(cfg).apply(sd, expected=expected_shapes(cfg))


def _format_version(path: str | Path) -> str | None:
    """``format_version`` from a safetensors header (without reading the tensors)."""
    import struct

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return (json.loads(fh.read(n)).get("__metadata__") or {}).get("format_version")


def load_weights(path: str | Path) -> tuple[dict[str, np.ndarray], SegmentationConfig]:
    """MLX-layout weights and config from any supported file, strictly checked."""
    tensors, cfg, converted = read_checkpoint(path)
    if converted:
        check_keys(tensors, expected_shapes(cfg), what=f"{path}")
        version = _format_version(path)
        if version == "1":  # written before the g-gate pre-scaling: upgrade in memory
            tensors = {k: scale_g_rows(v) if k.startswith("lstm.") else v
                       for k, v in tensors.items()}
        elif version != FORMAT_VERSION:
            raise ValueError(f"{path}: pyannote_mlx format_version {version!r}, this version "
                             f"reads 1 and {FORMAT_VERSION}; convert the checkpoint again")
        return tensors, cfg
    return convert_state_dict(tensors, cfg), cfg


def convert(src: str | Path, dst: str | Path) -> Path:
    """Write MLX safetensors (config in the metadata) for a pyannote checkpoint."""
    weights, cfg = load_weights(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(weights, dst, metadata={"format": FORMAT, "format_version": FORMAT_VERSION,
                                             "config": cfg.to_json(),
                                             "source": json.dumps(Path(src).name)})
    return dst
