"""S3Gen configuration: the fixed hyper-parameters of chatterbox 0.1.7's ``S3Token2Wav`` plus the
run-time choices (meanflow variant, ODE steps, dtype)."""
from __future__ import annotations

from dataclasses import dataclass

S3GEN_SR = 24000          # output and prompt-mel rate
S3_SR = 16000             # tokenizer and x-vector rate
SPEECH_VOCAB_SIZE = 6561  # valid speech-token ids: [0, 6560]
TOKEN_HZ = 25
MEL_HZ = 50
SAMPLES_PER_FRAME = 480   # HiFT: 8 * 5 * 3 upsampling * ISTFT hop 4
MAX_PROMPT_S = 10.0       # chatterbox warns above this (VC/TTS trim the prompt to 10 s)

# files a chatterbox repo/folder may hold; the first present is used
WEIGHT_FILES = ("s3gen.safetensors", "s3gen_meanflow.safetensors", "s3gen.pt")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class S3GenConfig:
    meanflow: bool = False           # Turbo/Nano checkpoint (s3gen_meanflow.safetensors)
    n_timesteps: int | None = None   # None: 10 (standard, cosine, CFG 0.7) or 2 (meanflow)
    dtype: str = "float32"           # float16/bfloat16: weight storage only (activations stay float32 by
                                     # MLX type promotion); not parity-tested

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.n_timesteps is not None and int(self.n_timesteps) < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {self.n_timesteps}")

    @property
    def steps(self) -> int:
        return int(self.n_timesteps) if self.n_timesteps else (2 if self.meanflow else 10)
