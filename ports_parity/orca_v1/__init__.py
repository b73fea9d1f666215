"""orca_v1 against the original fastai_audio frontend (golden data, torchaudio) and a
production-shaped loop: ``run_parity``, ``run_bench``, ``demo``."""
from __future__ import annotations

from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_parity": "parity:run", "run_bench": "bench:run"})


def save_random_weights(folder: str | Path, seed: int) -> Path:
    """A seeded random-weight OrcaResNet50 written as an HF folder (model.safetensors +
    config.json), for tests and benchmarks: no real orca weights can be had offline."""
    from ports.orca_v1.convert import save_hf
    from ports.orca_v1.model import OrcaResNet50, random_init_

    m = random_init_(OrcaResNet50(), seed=seed)
    save_hf({k: v.numpy() for k, v in m.state_dict().items()}, folder)
    return Path(folder)


def demo(out_dir: Path):
    """Random-weight model on generated hydrophone-like audio (no real OrcaHello weights can be
    had offline): writes the detection outputs and returns the golden parity report.

    A random ResNet50 head saturates (confidence 1.000 everywhere), so its last layer is rescaled
    on a third of the demo's own windows: logit margins spread to about +-3 around their 70th
    percentile, so the scores vary and about a third of the windows are positive. The detections
    still mean nothing; the demo shows the outputs and the plot, not a detector."""
    import numpy as np

    from ports.cli import main
    from ports.common.audio import write_audio
    from ports.orca_v1 import frontend as F
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
    model = random_init_(OrcaResNet50(), seed=0).eval()
    # calibrated on every third window of each live-system minute, as the detector will see them
    mels = np.concatenate([F.features(x, src.samplerate).mels[::3]
                           for _, x, src in F.iter_minutes(wav)])
    spread = rescale_head_(model, mels)
    wdir = out_dir / "random_weights"
    save_hf({k: v.numpy() for k, v in model.state_dict().items()}, wdir)
    print(f"orca_v1 demo weights: {wdir} — random weights: outputs are not meaningful (seeded "
          f"ResNet50, last layer rescaled so the scores vary: margin std {spread:.3g} -> 3)")
    main(["detect", str(wav), "--model", str(wdir), "--json", str(out_dir / "detections.json"),
          "--csv", str(out_dir / "rows.csv"), "--raven", str(out_dir / "raven.txt"),
          "--plot", str(out_dir / "detections.png")])
    from .parity import run

    return run(quick=True)


def rescale_head_(model, mels, spread: float = 3.0, quantile: float = 70.0) -> float:
    """Scale the last Linear of ``model`` so that the positive-minus-negative logit margin on
    ``mels`` (W, 256, 312) has std ``spread`` and its ``quantile`` at 0; returns the old std."""
    import numpy as np
    import torch

    last = model.fc[-1]
    pos = model.cfg.call_class_index
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(mels, np.float32))
        margin = model(x)
        margin = (margin[:, pos] - margin[:, 1 - pos]).double().numpy()
        std = float(margin.std()) or 1.0
        a = spread / std
        last.weight.mul_(a)
        last.bias.mul_(a)
        last.bias[pos] -= a * float(np.percentile(margin, quantile))
    return std
