"""Fixtures shared by the real tiny.en tests: the port and openai's model on the same weights."""
import pytest
import torch

from ports.common.samples import espeak
from ports.whisper_max.convert import load_any
from ports.whisper_max.pipeline import WhisperMax
from ports_parity.real_weights import whisper_tiny_en

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Machine learning models run on many different devices.",
             "Please call Stella and ask her to bring these things with her from the store."]


@pytest.fixture(scope="module")
def port():
    return WhisperMax.from_pretrained(whisper_tiny_en())


@pytest.fixture(scope="module")
def original(port):
    """openai-whisper's Whisper with the same converted weights (its own encoder and decoder)."""
    import whisper

    _, sd = load_any(whisper_tiny_en())
    m = whisper.model.Whisper(port.dims.to_openai())
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def sentences():
    return list(SENTENCES)


@pytest.fixture(scope="module")
def speech():
    return espeak(" ".join(SENTENCES[:2]))
