"""orca_v1 against the original fastai_audio frontend (golden data, torchaudio) and a
production-shaped loop: ``run_parity``, ``run_bench``, ``demo``."""
from __future__ import annotations

from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_parity": "parity:run", "run_bench": "bench:run"})


def demo(out_dir: Path):
    """Random-weight model on generated hydrophone-like audio (no real weights offline): writes
    the detection outputs and returns the golden parity report."""
    import numpy as np

    from ports.cli import main
    from ports.common.audio import write_audio
    from ports.orca_v1.convert import save_hf
    from ports.orca_v1.model import OrcaResNet50, random_init_

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sr = 48000
    t = np.arange(int(65 * sr)) / sr
    x = 0.01 * rng.standard_normal(t.size)
    for c in (10.0, 30.0, 62.0):
        m = (t > c) & (t < c + 1.0)
        u = t[m] - c  # a 0.9 -> 1.2 kHz upsweep with 4 harmonics, like a pulsed call
        x[m] += sum(0.1 / k * np.sin(2 * np.pi * k * (900 * u + 150 * u * u)) for k in range(1, 5))
    wav = out_dir / "demo_48k.wav"
    write_audio(wav, np.stack([x, 0.6 * x]).astype(np.float32), sr)
    model = random_init_(OrcaResNet50(), seed=0)
    wdir = out_dir / "random_weights"
    save_hf({k: v.numpy() for k, v in model.state_dict().items()}, wdir)
    main(["detect", str(wav), "--model", str(wdir), "--json", str(out_dir / "detections.json"),
          "--csv", str(out_dir / "rows.csv"), "--raven", str(out_dir / "raven.txt"),
          "--plot", str(out_dir / "detections.png")])
    from .parity import run

    return run(quick=True)
