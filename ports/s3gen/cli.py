"""``ports vocode`` / ``ports vc`` and the port contract (parity, bench, demo, convert) for S3Gen.

MLX, torch and chatterbox are imported inside the functions only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DEFAULT_SOURCE as DEFAULT_MODEL


def _add_model_args(p):
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="chatterbox repo id, folder or s3gen*.safetensors (or a converted file); "
                        f"default {DEFAULT_MODEL}")
    p.add_argument("--meanflow", action="store_true", default=None,
                   help="use the meanflow (Turbo) weights s3gen_meanflow.safetensors")
    p.add_argument("--steps", type=int, default=None, help="ODE steps (default 10, meanflow 2)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="weight dtype (only float32 is parity-tested)")
    p.add_argument("--seed", type=int, default=None, help="seed of the flow noise and vocoder source")


def register(subparsers) -> None:
    p = subparsers.add_parser("vocode", help="S3Gen: speech tokens + voice prompt -> 24 kHz speech")
    p.add_argument("--tokens", required=True, help="speech tokens: .npy (int, (n,) or (1, n)) or text")
    p.add_argument("--prompt", required=True,
                   help="reference voice audio (any rate/channels; first 10 s used, as chatterbox TTS)")
    p.add_argument("-o", "--output", required=True, help="output WAV (24 kHz)")
    p.add_argument("--noise", help="flow initial noise .npy, (1, 80, frames) or (80, frames) with "
                                   "frames = 2 * (prompt tokens + tokens), for exact reproduction")
    p.add_argument("--dump", help="also write mel and wav to this .npz")
    p.add_argument("--plot", help="write a PNG of the generated mel")
    _add_model_args(p)
    p.set_defaults(func=cmd_vocode)

    p = subparsers.add_parser("vc", help="S3Gen voice conversion: speech -> speech in another voice")
    p.add_argument("source", help="speech to convert")
    p.add_argument("--voice", required=True, help="reference voice audio (first 10 s used)")
    p.add_argument("-o", "--output", required=True, help="output WAV (24 kHz)")
    p.add_argument("--plot", help="write a PNG of the generated mel")
    _add_model_args(p)
    p.set_defaults(func=cmd_vc)


# ------------------------------------------------------------------------------------- tasks
def load_tokens(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tokens file not found: {p}")
    if p.suffix == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{p}: not a numeric .npy array ({err})") from None
    else:
        txt = p.read_text().replace(",", " ").split()
        try:
            a = np.array([int(t) for t in txt], dtype=np.int64)
        except ValueError:
            raise ValueError(f"{p}: expected whitespace/comma separated integer token ids") from None
    from .flow import check_tokens

    return check_tokens(a, f"tokens ({p.name})")


def _load_model(args):
    from .pipeline import from_pretrained

    return from_pretrained(args.model, meanflow=args.meanflow, dtype=args.dtype, n_timesteps=args.steps)


def _ode_progress():
    from ports.common.progress import progress

    return lambda it: progress(it, desc="S3Gen ODE", unit="step")


def plot_mel(mel: np.ndarray, path: str, title: str = "S3Gen mel") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, mel.shape[-1] / 60), 3))
    im = ax.imshow(mel, origin="lower", aspect="auto", interpolation="nearest",
                   extent=(0, mel.shape[-1] / 50, 0, mel.shape[0]))
    ax.set_xlabel("s")
    ax.set_ylabel("mel bin")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log mel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_vocode(args) -> int:
    from ports.common.audio import write_audio

    from .config import S3GEN_SR
    from .pipeline import load_prompt, vocode

    tokens = load_tokens(args.tokens)  # validated before loading the model
    prompt = load_prompt(args.prompt)
    noise = None
    if args.noise:
        noise = np.load(args.noise, allow_pickle=False).astype(np.float32)
        if noise.ndim == 2:
            noise = noise[None]
    model = _load_model(args)
    wav, mel = vocode(tokens, prompt, S3GEN_SR, model=model, noise=noise, seed=args.seed,
                      progress=_ode_progress(), return_mel=True)
    write_audio(args.output, wav, S3GEN_SR)
    print(f"wrote {args.output} ({len(wav) / S3GEN_SR:.2f} s, {tokens.shape[1]} tokens)")
    if args.dump:
        np.savez(args.dump, mel=mel, wav=wav)
        print(f"wrote {args.dump}")
    if args.plot:
        plot_mel(mel, args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_vc(args) -> int:
    from ports.common.audio import load_audio, write_audio

    from .config import S3_SR, S3GEN_SR
    from .pipeline import load_prompt, voice_convert

    src, _ = load_audio(args.source, sr=S3_SR, channels="mean")
    ref = load_prompt(args.voice)
    model = _load_model(args)
    wav = voice_convert(src, S3_SR, ref, S3GEN_SR, model=model, seed=args.seed,
                        progress=_ode_progress(), return_mel=bool(args.plot))
    if args.plot:
        wav, mel = wav
        plot_mel(mel, args.plot, "S3Gen VC mel")
        print(f"wrote {args.plot}")
    write_audio(args.output, wav, S3GEN_SR)
    print(f"wrote {args.output} ({len(wav) / S3GEN_SR:.2f} s)")
    return 0


def convert(src: str, dst: str) -> None:
    from . import convert as conv
    from .pipeline import resolve_weights

    conv.convert(resolve_weights(src), dst)
