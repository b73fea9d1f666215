"""Chatterbox S3Gen (speech tokens -> mel -> 24 kHz waveform) in MLX.

    from ports.s3gen import from_pretrained
    model = from_pretrained("ResembleAI/chatterbox")        # or a folder / s3gen*.safetensors
    ref = model.embed_ref(prompt_wav, prompt_sr)             # prompt tokens, mel, x-vector
    wav, source = model.inference(tokens, ref, seed=0)       # (1, N) at 24 kHz
    # exact reproduction of chatterbox: inference(tokens, ref, noise=z, source=s)

CLI: ``ports vocode --tokens T.npy --prompt REF.wav -o OUT.wav`` and ``ports vc SRC.wav --voice
REF.wav -o OUT.wav``.

The optimized BLAS must be loaded before the first ``import mlx``, so it happens here, before any
submodule imports MLX.
"""
from ports.common.blas import preload_blas

preload_blas()

__all__ = ["S3Gen", "from_pretrained"]


def __getattr__(name):  # lazy: `ports --help` must not import MLX
    if name == "S3Gen":
        from .model import S3Gen

        return S3Gen
    if name == "from_pretrained":
        from .pipeline import from_pretrained

        return from_pretrained
    raise AttributeError(name)
