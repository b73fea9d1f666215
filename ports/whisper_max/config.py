"""Whisper model dimensions (the fields of openai-whisper's ``ModelDimensions``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Fixed by Whisper's front end: 30 s windows of 100 mel frames/s, halved by conv2's stride.
SAMPLE_RATE = 16000
N_FRAMES = 3000


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"WhisperDims.{f.name} must be a positive int, got {v!r}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(f"n_audio_state {self.n_audio_state} is not divisible by "
                             f"n_audio_head {self.n_audio_head}")
        if self.n_audio_ctx * 2 != N_FRAMES:
            raise ValueError(f"n_audio_ctx must be {N_FRAMES // 2} (30 s windows), "
                             f"got {self.n_audio_ctx}")

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= 51865

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "WhisperDims":
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        unexpected = set(d) - names
        if missing or unexpected:
            raise ValueError(f"model dims: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        return cls(**{k: int(d[k]) for k in names})

    def to_openai(self):
        from whisper.model import ModelDimensions

        return ModelDimensions(**self.to_dict())


def _dims(n_mels, state, head, layers, vocab, text_layers=None) -> WhisperDims:
    return WhisperDims(n_mels, 1500, state, head, layers, vocab, 448, state, head,
                       layers if text_layers is None else text_layers)


# The released checkpoints (openai-whisper's _MODELS); .en models drop one token.
MODELS: dict[str, WhisperDims] = {
    "tiny.en": _dims(80, 384, 6, 4, 51864),
    "tiny": _dims(80, 384, 6, 4, 51865),
    "base.en": _dims(80, 512, 8, 6, 51864),
    "base": _dims(80, 512, 8, 6, 51865),
    "small.en": _dims(80, 768, 12, 12, 51864),
    "small": _dims(80, 768, 12, 12, 51865),
    "medium.en": _dims(80, 1024, 16, 24, 51864),
    "medium": _dims(80, 1024, 16, 24, 51865),
    "large-v1": _dims(80, 1280, 20, 32, 51865),
    "large-v2": _dims(80, 1280, 20, 32, 51865),
    "large-v3": _dims(128, 1280, 20, 32, 51866),
    "large": _dims(128, 1280, 20, 32, 51866),
    "large-v3-turbo": _dims(128, 1280, 20, 32, 51866, text_layers=4),
    "turbo": _dims(128, 1280, 20, 32, 51866, text_layers=4),
}


def dims_for(name: str) -> WhisperDims:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown Whisper model {name!r}; known: {', '.join(MODELS)}") from None


def encoder_shapes(d: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of openai-whisper's ``AudioEncoder`` state dict."""
    s = d.n_audio_state
    out: dict[str, tuple[int, ...]] = {
        "conv1.weight": (s, d.n_mels, 3), "conv1.bias": (s,),
        "conv2.weight": (s, s, 3), "conv2.bias": (s,),
        "positional_embedding": (d.n_audio_ctx, s),
        "ln_post.weight": (s,), "ln_post.bias": (s,),
    }
    for i in range(d.n_audio_layer):
        out.update({f"blocks.{i}.{k}": v for k, v in block_shapes(s).items()})
    return out


def block_shapes(s: int) -> dict[str, tuple[int, ...]]:
    m = 4 * s
    return {
        "attn.query.weight": (s, s), "attn.query.bias": (s,), "attn.key.weight": (s, s),
        "attn.value.weight": (s, s), "attn.value.bias": (s,),
        "attn.out.weight": (s, s), "attn.out.bias": (s,),
        "attn_ln.weight": (s,), "attn_ln.bias": (s,),
        "mlp.0.weight": (m, s), "mlp.0.bias": (m,), "mlp.2.weight": (s, m), "mlp.2.bias": (s,),
        "mlp_ln.weight": (s,), "mlp_ln.bias": (s,),
    }


def decoder_shapes(d: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of openai-whisper's ``TextDecoder`` state dict."""
    s, m = d.n_text_state, 4 * d.n_text_state
    out: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (d.n_vocab, s), "positional_embedding": (d.n_text_ctx, s),
        "ln.weight": (s,), "ln.bias": (s,),
    }
    for i in range(d.n_text_layer):
        p = f"blocks.{i}."
        for att in ("attn", "cross_attn"):
            out.update({p + f"{att}.query.weight": (s, s), p + f"{att}.query.bias": (s,),
                        p + f"{att}.key.weight": (s, s), p + f"{att}.value.weight": (s, s),
                        p + f"{att}.value.bias": (s,), p + f"{att}.out.weight": (s, s),
                        p + f"{att}.out.bias": (s,), p + f"{att}_ln.weight": (s,),
                        p + f"{att}_ln.bias": (s,)})
        out.update({p + "mlp.0.weight": (m, s), p + "mlp.0.bias": (m,), p + "mlp.2.weight": (s, m),
                    p + "mlp.2.bias": (s,), p + "mlp_ln.weight": (s,), p + "mlp_ln.bias": (s,)})
    return out


def whisper_shapes(d: WhisperDims) -> dict[str, tuple[int, ...]]:
    """The full openai ``Whisper`` state dict: ``encoder.*`` and ``decoder.*``."""
    out = {f"encoder.{k}": v for k, v in encoder_shapes(d).items()}
    out.update({f"decoder.{k}": v for k, v in decoder_shapes(d).items()})
    return out
