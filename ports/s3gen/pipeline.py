"""Loading S3Gen and the two tasks: tokens + prompt -> speech (vocode), speech -> speech in another
voice (voice conversion, chatterbox ``ChatterboxVC`` without its watermark)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ports.common.audio import load_audio
from ports.common.hub import ModelSourceError, cached_conversion, is_repo_id, resolve_file

from .config import MAX_PROMPT_S, S3_SR, S3GEN_SR, WEIGHT_FILES, S3GenConfig

DEFAULT_REPO = "ResembleAI/chatterbox"
MEANFLOW_FILE = "s3gen_meanflow.safetensors"


def resolve_weights(source: str | Path = DEFAULT_REPO, *, meanflow: bool | None = None,
                    revision: str | None = None, token=None) -> Path:
    """The S3Gen checkpoint of ``source``: a file, a folder or a repo id holding
    ``s3gen.safetensors`` (standard) or ``s3gen_meanflow.safetensors`` (Turbo/Nano)."""
    p = Path(str(source)).expanduser()
    if p.is_file():
        return p
    if not p.exists() and not is_repo_id(str(source)):
        raise ModelSourceError(f"S3Gen model source {str(source)!r} is neither an existing file or "
                               "folder nor a Hugging Face repo id (owner/name)")
    names = {True: (MEANFLOW_FILE,), False: ("s3gen.safetensors", "s3gen.pt")}.get(meanflow, WEIGHT_FILES)
    errors = []
    for name in names:
        try:
            return resolve_file(source, name, revision=revision, token=token)
        except ModelSourceError as err:
            errors.append(f"{name}: {err}")
    raise ModelSourceError(f"no S3Gen weights in {source!s} (tried {', '.join(names)}): "
                           + " | ".join(e.replace("\n", " ") for e in errors))


def from_pretrained(source: str | Path = DEFAULT_REPO, *, meanflow: bool | None = None,
                    dtype: str = "float32", n_timesteps: int | None = None,
                    revision: str | None = None, token=None):
    """S3Gen from chatterbox weights (converted once, cached) or an already converted file.

    ``dtype`` float16/bfloat16 stores the weights in that type (activations follow MLX type
    promotion); only float32 is parity-tested.
    """
    from ports.common.blas import import_mlx

    from . import convert as conv

    mx = import_mlx()
    path = resolve_weights(source, meanflow=meanflow, revision=revision, token=token)
    if not conv.is_converted(path):
        path = cached_conversion(path, "s3gen", conv.TAG, lambda s, d: conv.convert(s, d, meanflow))
    model = conv.load_converted(path)
    if meanflow is not None and model.meanflow != meanflow:
        raise ValueError(f"{path}: holds {'meanflow' if model.meanflow else 'standard'} weights, "
                         f"but meanflow={meanflow} was asked for")
    model.config = S3GenConfig(meanflow=model.meanflow, n_timesteps=n_timesteps, dtype=dtype)
    if dtype != "float32":
        model.set_dtype(getattr(mx, dtype))
    return model


# ---------------------------------------------------------------------------------------- tasks
def load_prompt(path: str | Path, sr: int = S3GEN_SR) -> np.ndarray:
    """Mono float32 prompt at ``sr`` (any rate/channels converted), trimmed to 10 s like
    chatterbox's VC/TTS ``DEC_COND_LEN``."""
    x, _ = load_audio(path, sr=sr, channels="mean")
    return x[: int(MAX_PROMPT_S * sr)]


def vocode(model, tokens, prompt_wav: np.ndarray, prompt_sr: int, *, noise=None, source=None,
           seed: int | None = None, progress=None, return_mel: bool = False):
    """Speech tokens -> 24 kHz waveform (N,) in the prompt's voice [, generated mel (80, T)]."""
    from .model import check_tokens

    tok = check_tokens(tokens)  # before the (slow) prompt embedding
    ref = model.embed_ref(prompt_wav, prompt_sr)
    out = model.inference(tok, ref, noise=noise, source=source, seed=seed,
                          return_stages=return_mel, progress=progress)
    wav = np.array(out[0])[0]
    if return_mel:
        return wav, np.array(out[2]["mel"])[0]
    return wav


def voice_convert(model, source_wav: np.ndarray, source_sr: int, ref_wav: np.ndarray, ref_sr: int,
                  *, seed: int | None = None, progress=None, return_mel: bool = False):
    """chatterbox ``ChatterboxVC.generate``: source speech -> 16 kHz -> S3 tokens -> S3Gen in the
    reference voice (reference at 24 kHz, first 10 s). No watermark."""
    from .mel import prompt_audio

    src16 = prompt_audio(source_wav, source_sr, S3_SR, name="source speech")
    toks, lens = model.tokenizer([src16])
    toks = np.array(toks)[0, : int(np.array(lens)[0])]
    if toks.size == 0:
        raise ValueError("source speech gave no speech tokens (too short)")
    ref24 = prompt_audio(ref_wav, ref_sr, S3GEN_SR, name="voice reference")
    ref24 = ref24[: int(MAX_PROMPT_S * S3GEN_SR)]
    ref = model.embed_ref(ref24, S3GEN_SR)
    out = model.inference(toks, ref, seed=seed, progress=progress, return_stages=return_mel)
    wav = np.array(out[0])[0]
    return (wav, np.array(out[2]["mel"])[0]) if return_mel else wav
