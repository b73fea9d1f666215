"""Whisper with its audio encoder as a Modular MAX graph, transcribing through openai-whisper's
own decoding.

    from ports.whisper_max import from_pretrained, transcribe
    model = from_pretrained("tiny.en")            # a name, an HF repo id or a local checkpoint
    result = transcribe("talk.mp3", model=model)  # openai-whisper's result dict
    result["text"]

Importing this package loads no framework: MAX, torch and whisper load with the first model.
"""
from ports.common.lazy import exports

from .config import MODELS, WhisperDims, dims_for

DEFAULT_SOURCE = "tiny.en"

__all__ = ["DEFAULT_SOURCE", "MODELS", "WhisperDims", "dims_for", "WhisperMax",
           "MaxAudioEncoder", "from_pretrained", "transcribe"]
__getattr__, __dir__ = exports(__name__, {
    "WhisperMax": "pipeline", "from_pretrained": "pipeline", "transcribe": "pipeline",
    "MaxAudioEncoder": "model"})
