"""Whisper audio encoder as a Modular MAX graph, transcribing through openai-whisper's decoder.

Heavy imports (max, torch, whisper) happen inside the functions that need them.
"""
from .config import MODELS, WhisperDims, dims_for  # noqa: F401
