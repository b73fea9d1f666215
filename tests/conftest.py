"""Suite-wide settings: no network, no telemetry, a private converted-weight cache."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub / pyannote: the suite never reaches the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AUDIO_PORTS_CACHE", tempfile.mkdtemp(prefix="audio-ports-cache-"))

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared/` beside the checkout (test data; read its README)."""
    if not SHARED.is_dir():
        pytest.fail(f"test data folder {SHARED} is missing (it sits beside the checkout)")
    return SHARED


@pytest.fixture(scope="session")
def speech16k():
    """~3 s of espeak-ng speech at 16 kHz (float32 mono)."""
    from ports.common.samples import espeak

    return espeak("The quick brown fox jumps over the lazy dog.", sr=16000)
