"""Chatterbox S3Gen (speech tokens -> mel -> 24 kHz waveform) in MLX.

    from ports.s3gen import from_pretrained, vocode, voice_convert
    model = from_pretrained("ResembleAI/chatterbox")          # or a folder / s3gen*.safetensors
    wav = vocode(tokens, prompt_wav, prompt_sr, model=model, seed=0)   # (N,) at 24 kHz
    wav = voice_convert(speech, 16000, reference, 24000, model=model)
    # exact reproduction of chatterbox: model.inference(tokens, model.embed_ref(...), noise=z, source=s)

CLI: ``ports vocode --tokens T.npy --prompt REF.wav -o OUT.wav`` and ``ports vc SRC.wav --voice
REF.wav -o OUT.wav``. Importing this package loads no framework: MLX (after the optimized BLAS
preload) loads with the first model.
"""
from ports.common.lazy import exports

DEFAULT_SOURCE = "ResembleAI/chatterbox"

__all__ = ["DEFAULT_SOURCE", "S3Gen", "S3GenConfig", "from_pretrained", "vocode", "voice_convert"]
__getattr__, __dir__ = exports(__name__, {
    "S3Gen": "model", "S3GenConfig": "config", "from_pretrained": "pipeline", "vocode": "pipeline",
    "voice_convert": "pipeline"})
