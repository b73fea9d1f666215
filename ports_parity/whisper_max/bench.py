"""Encoder time for one 30-s window (MAX vs openai-whisper torch, and vs faster-whisper fp32),
cold first call in a fresh process, and end-to-end transcription real-time factor."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from ports_parity.common.bench import Case, run_cases, timing_side

COLD_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from ports.whisper_max.pipeline import WhisperMax
from ports_parity.real_weights import whisper_tiny_en
m = WhisperMax.from_pretrained(whisper_tiny_en())
m.embed_audio(np.zeros((80, 3000), np.float32))
print(time.perf_counter() - t)
"""


def cold_first_call_s() -> float:
    """Fresh interpreter: import, load tiny.en, compile (from ~/.cache/modular when warm), encode."""
    out = subprocess.run([sys.executable, "-c", COLD_SNIPPET], check=True, capture_output=True,
                         text=True).stdout
    return float(out.strip().splitlines()[-1])


def _speech(seconds_min: float = 35.0) -> np.ndarray:
    from ports.common.samples import espeak

    lines = ["The quick brown fox jumps over the lazy dog.",
             "Machine learning models run on many different devices.",
             "Please call Stella and ask her to bring these things from the store."]
    gap = np.zeros(16000 * 2, np.float32)
    parts, n = [], 0
    while n < seconds_min * 16000:
        for s in lines:
            parts += [espeak(s), gap]
            n += parts[-2].shape[0] + gap.shape[0]
    return np.concatenate(parts)


def run(quick: bool = False):
    import torch
    import whisper

    from ports.whisper_max.config import dims_for
    from ports.whisper_max.model import MaxAudioEncoder
    from ports_parity.whisper_max.parity import openai_reference, random_encoder, random_mel
    from ports.whisper_max.pipeline import WhisperMax
    from ports_parity.real_weights import whisper_tiny_en

    repeats = 3 if quick else 5
    cases: list[Case] = []
    port = WhisperMax.from_pretrained(whisper_tiny_en())
    ref = openai_reference(port)
    wav = _speech(10.0 if quick else 35.0)
    mel = port.log_mel(wav[: 30 * 16000])
    tmel = torch.from_numpy(mel)[None]

    def torch_enc(m, x):
        def f():
            with torch.no_grad():
                m(x)
        return f

    cases.append(Case("encoder tiny.en 30 s: MAX vs torch", lambda: port.embed_audio(mel),
                      torch_enc(ref.encoder, tmel), repeats=repeats,
                      meta={"torch_threads": torch.get_num_threads()}))
    if not quick:
        dims = dims_for("base")
        enc, sd = random_encoder(dims)
        bport = MaxAudioEncoder(dims, sd)
        bmel = random_mel(dims)
        cases.append(Case("encoder base 30 s: MAX vs torch", lambda: bport(bmel),
                          torch_enc(enc, torch.from_numpy(bmel)), repeats=repeats))
    audio_s = wav.shape[0] / 16000
    cases.append(Case(f"transcribe tiny.en {audio_s:.0f} s: MAX vs openai-whisper",
                      lambda: port.transcribe(wav, temperature=0.0),
                      lambda: whisper.transcribe(ref, wav, temperature=0.0, fp16=False),
                      repeats=1 if quick else 2, meta={"audio_s": audio_s}))
    # Created lazily and run last, so CTranslate2's own thread pool does not exist while the
    # torch cases run (precaution on 2 cores).
    # faster-whisper is part of the whisper harness (ports_parity.REQUIREMENTS): no silent skip.
    import ctranslate2
    from faster_whisper import WhisperModel

    fw_holder: dict = {}

    def fw_encode():
        if "m" not in fw_holder:  # created lazily, inside the warmup call
            fw_holder["m"] = WhisperModel(str(whisper_tiny_en()), device="cpu",
                                          compute_type="float32")
            fw_holder["sv"] = ctranslate2.StorageView.from_array(mel[None])
        fw_holder["m"].model.encode(fw_holder["sv"], to_cpu=True)

    cases.append(Case("encoder tiny.en 30 s: MAX vs faster-whisper fp32",
                      lambda: port.embed_audio(mel), fw_encode, repeats=repeats))
    report = run_cases("whisper_max", cases)  # rows carry audio_s, so rtf / original_rtf
    if timing_side() == "original":  # the cold call is port-only
        return report
    t = time.perf_counter()
    cold = cold_first_call_s()
    report.cases.append({"name": "cold first call (fresh process, tiny.en load+compile+encode)",
                        "port_s": cold, "port_median_s": cold, "original_s": None,
                        "original_median_s": None, "ratio": None, "speedup": None,
                        "peak_rss_mb": None, "original_peak_rss_mb": None, "repeats": 1,
                        "wall_s": time.perf_counter() - t})
    return report
