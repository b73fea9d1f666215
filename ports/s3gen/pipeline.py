"""Loading S3Gen and the two tasks: tokens + prompt -> speech (vocode), speech -> speech in another
voice (voice conversion, chatterbox ``ChatterboxVC`` without its watermark)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ports.common.audio import load_audio
from ports.common.hub import ModelSourceError, cached_conversion, is_repo_id, resolve_file

from .config import MAX_PROMPT_S, S3_SR, S3GEN_SR, WEIGHT_FILES, S3GenConfig

from . import DEFAULT_SOURCE

MEANFLOW_FILE = "s3gen_meanflow.safetensors"


def resolve_weights(source: str | Path = DEFAULT_SOURCE, *, meanflow: bool | None = None,
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


def from_pretrained(source: str | Path = DEFAULT_SOURCE, *, revision: str | None = None,
                    token=None, cache: bool = True, meanflow: bool | None = None,
                    dtype: str = "float32", n_timesteps: int | None = None):
    """``S3Gen`` for ``source``: a Hugging Face repo id (default ``ResembleAI/chatterbox``), a
    folder or a checkpoint file (chatterbox ``s3gen*.safetensors`` / ``s3gen.pt``, or an already
    converted file). ``cache``: convert a checkpoint once into ``~/.cache/audio-ports/s3gen``
    (keyed by its sha256); otherwise into a temporary file.

    ``dtype`` float16/bfloat16 stores the weights in that type (activations follow MLX type
    promotion); only float32 is parity-tested.
    """
    from ports.common.blas import import_mlx

    from . import convert as conv

    mx = import_mlx()
    path = resolve_weights(source, meanflow=meanflow, revision=revision, token=token)
    if conv.is_converted(path):
        model = conv.load_converted(path)
    elif cache:
        model = conv.load_converted(cached_conversion(
            path, "s3gen", conv.TAG, lambda s, d: conv.convert(s, d, meanflow)))
    else:  # convert in memory, write nothing
        from ports.common.convert import load_state_dict
        from ports.common.mlx_weights import load_into

        from .model import S3Gen

        weights, mf = conv.convert_state_dict(load_state_dict(path), meanflow)
        model = S3Gen(S3GenConfig(meanflow=mf))
        load_into(model, weights, what=f"S3Gen weights {path}")
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


def _model(model):
    from .model import S3Gen

    return model if isinstance(model, S3Gen) else from_pretrained(model)


def vocode(tokens, prompt_wav: np.ndarray, prompt_sr: int, *, model=DEFAULT_SOURCE, noise=None,
           source=None, seed: int | None = None, progress=None, return_mel: bool = False):
    """Speech tokens -> 24 kHz waveform (N,) in the prompt's voice [, generated mel (80, T)].
    ``model``: an ``S3Gen`` or a source for :func:`from_pretrained`."""
    from .flow import check_tokens

    tok = check_tokens(tokens)  # before the (slow) model load and prompt embedding
    model = _model(model)
    ref = model.embed_ref(prompt_wav, prompt_sr)
    out = model.inference(tok, ref, noise=noise, source=source, seed=seed,
                          return_stages=return_mel, progress=progress)
    wav = np.array(out[0])[0]
    if return_mel:
        return wav, np.array(out[2]["mel"])[0]
    return wav


def voice_convert(source_wav: np.ndarray, source_sr: int, ref_wav: np.ndarray, ref_sr: int, *,
                  model=DEFAULT_SOURCE, seed: int | None = None, progress=None,
                  return_mel: bool = False):
    """chatterbox ``ChatterboxVC.generate``: source speech -> 16 kHz -> S3 tokens -> S3Gen in the
    reference voice (reference at 24 kHz, first 10 s). No watermark. ``model``: an ``S3Gen`` or a
    source for :func:`from_pretrained`."""
    from .prompt import prompt_audio

    src16 = prompt_audio(source_wav, source_sr, S3_SR, name="source speech")
    ref24 = prompt_audio(ref_wav, ref_sr, S3GEN_SR, name="voice reference")
    model = _model(model)
    toks, lens = model.tokenizer([src16])
    toks = np.array(toks)[0, : int(np.array(lens)[0])]
    if toks.size == 0:
        raise ValueError("source speech gave no speech tokens (too short)")
    ref24 = ref24[: int(MAX_PROMPT_S * S3GEN_SR)]
    ref = model.embed_ref(ref24, S3GEN_SR)
    out = model.inference(toks, ref, seed=seed, progress=progress, return_stages=return_mel)
    wav = np.array(out[0])[0]
    return (wav, np.array(out[2]["mel"])[0]) if return_mel else wav
