"""pyannote_mlx against pyannote.audio 4.0.7: ``run_parity``, ``run_bench``, ``demo``."""
from __future__ import annotations

from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_parity": "parity:run", "run_bench": "bench:run"})


def demo(out_dir: Path):
    """Parity on generated speech (random seg-3.0-shaped weights), then ``ports segment`` on it."""
    from ports.cli import main
    from ports.common.audio import write_audio

    from .parity import conversation_audio, run

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = run(quick=True, workdir=out_dir)
    write_audio(out_dir / "conversation.wav", conversation_audio(21.5), 16000)
    print("demo weights: seeded random with segmentation-3.0 shapes (the parity checkpoint); "
          "run `ports segment AUDIO --model pyannote/segmentation-3.0` for real segmentation")
    main(["segment", str(out_dir / "conversation.wav"), "--model", str(out_dir / "pytorch_model.bin"),
          "--rttm", str(out_dir / "speech.rttm"), "--json", str(out_dir / "segment.json"),
          "--plot", str(out_dir / "segment.png"), "--dump", str(out_dir / "segment.npz")])
    return report
