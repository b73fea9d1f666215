"""``ports vocode`` / ``ports vc`` and the port contract (parity, bench, demo, convert) for S3Gen.

MLX, torch and chatterbox are imported inside the functions only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_MODEL = "ResembleAI/chatterbox"


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
    from .model import check_tokens

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
    wav, mel = vocode(model, tokens, prompt, S3GEN_SR, noise=noise, seed=args.seed,
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
    wav = voice_convert(model, src, S3_SR, ref, S3GEN_SR, seed=args.seed, progress=_ode_progress(),
                        return_mel=bool(args.plot))
    if args.plot:
        wav, mel = wav
        plot_mel(mel, args.plot, "S3Gen VC mel")
        print(f"wrote {args.plot}")
    write_audio(args.output, wav, S3GEN_SR)
    print(f"wrote {args.output} ({len(wav) / S3GEN_SR:.2f} s)")
    return 0


# ------------------------------------------------------------------------------ port contract
def run_parity(quick: bool = False):
    """HiFT stages, then the whole S3Gen with and without a prompt (and meanflow unless quick),
    against chatterbox 0.1.7 with random seeded weights."""
    import torch

    from ports.common.parity import ParityReport

    from .parity import hift_parity, model_parity, original_s3gen, phase_drift, port_s3gen_from

    torch.set_num_threads(1)
    rep = ParityReport("s3gen", original="chatterbox-tts 0.1.7 (random seeded weights)")
    hift_parity(n_frames=40 if quick else 100, report=rep)
    d = phase_drift(10.0)
    rep.check("hift.sine_phase_10s_vs_float64", d["max_abs"] < 1e-5, f"max abs {d['max_abs']:.2e}",
              **d)
    orig = original_s3gen(0)
    port = port_s3gen_from(orig)
    model_parity(25 if quick else 100, 0.5 if quick else 1.0, original=orig, port=port, report=rep)
    if not quick:
        model_parity(50, 0.0, original=orig, port=port, report=rep)
        del orig, port
        orig = original_s3gen(1, meanflow=True)
        model_parity(50, 1.0, seed=1, meanflow=True, original=orig, port=port_s3gen_from(orig),
                     report=rep)
    return rep


def run_bench(quick: bool = False):
    from .bench import run

    return run(quick=quick)


def demo(out_dir: Path):
    """Voice conversion of generated speech (espeak) into another espeak voice with the released
    weights when they can be loaded (HF cache or AUDIO_PORTS_S3GEN_MODEL); otherwise the parity
    run on random weights (quick), since a random-weight waveform would mean nothing."""
    import os

    from ports.common.audio import write_audio
    from ports.common.hub import ModelSourceError
    from ports.common.samples import espeak

    from .config import S3_SR, S3GEN_SR
    from .pipeline import from_pretrained, voice_convert

    out_dir = Path(out_dir)
    src = espeak("Hello, this sentence is spoken again in another voice.", sr=S3_SR)
    ref = espeak("This is the reference voice for the conversion.", voice="en-gb", sr=S3GEN_SR,
                 pitch=20)
    write_audio(out_dir / "source.wav", src, S3_SR)
    write_audio(out_dir / "voice.wav", ref, S3GEN_SR)
    try:
        model = from_pretrained(os.environ.get("AUDIO_PORTS_S3GEN_MODEL", DEFAULT_MODEL))
    except (ModelSourceError, FileNotFoundError) as err:
        print(f"s3gen demo: no released weights ({str(err).splitlines()[0]}); running parity instead")
        return run_parity(quick=True)
    wav, mel = voice_convert(model, src, S3_SR, ref, S3GEN_SR, seed=0, return_mel=True)
    write_audio(out_dir / "vc.wav", wav, S3GEN_SR)
    plot_mel(mel, str(out_dir / "vc_mel.png"), "S3Gen VC mel")
    print(f"wrote {out_dir / 'vc.wav'}")
    return None


def convert(src: str, dst: str) -> None:
    from . import convert as conv
    from .pipeline import resolve_weights

    conv.convert(resolve_weights(src), dst)
