"""whisper_max vs openai-whisper (and faster-whisper peers), each side in its own process.

    python benchmarks/whisper_max_sides.py [--repeats N] [--cases encoder,transcribe,base]
                                           [--sides max,max-torchdec,openai,fw32,fwint8]
                                           [--min-seconds S]

Every (case, side) runs in a fresh interpreter: import + load + first call (graph compile from
the MAX disk cache, or cold when it is empty), then ``--repeats`` timed calls; min and median,
peak RSS of the process. Prints one JSON line per run and a markdown table at the end.
Audio: espeak-ng speech (3 sentences with 2-s gaps, repeated to >= 35 s); the encoder case
encodes its first 30-s window. ``base``: the base encoder with seeded random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

def tiny_en():
    from ports_parity.real_weights import whisper_tiny_en

    return whisper_tiny_en()


def _speech(seconds_min=35.0):
    """The harness's speech sample (espeak, > 35 s with pauses), so both measure the same audio."""
    from ports_parity.whisper_max.bench import _speech as harness_speech

    return harness_speech(seconds_min)


def child(case: str, side: str, repeats: int, min_seconds: float = 35.0) -> dict:
    t0 = time.perf_counter()
    import numpy as np

    wav = _speech(min_seconds)
    t_audio = time.perf_counter()
    if case == "base":
        import torch

        from ports.whisper_max.config import dims_for
        from ports_parity.whisper_max.parity import random_encoder, random_mel

        dims = dims_for("base")
        mel = random_mel(dims)
        enc, sd = random_encoder(dims)
        if side == "max":
            from ports.whisper_max.model import MaxAudioEncoder

            port = MaxAudioEncoder(dims, sd)
            fn = lambda: port(mel)  # noqa: E731
        else:
            x = torch.from_numpy(mel)

            def fn():
                with torch.no_grad():
                    enc(x)
    elif side.startswith("max"):
        from ports.whisper_max.pipeline import WhisperMax

        port = WhisperMax.from_pretrained(tiny_en(),
                                          decoder="torch" if side == "max-torchdec" else "max")
        if case == "encoder":
            mel = port.log_mel(wav[: 30 * 16000])
            fn = lambda: port.embed_audio(mel)  # noqa: E731
        else:
            fn = lambda: port.transcribe(wav, temperature=0.0)["text"]  # noqa: E731
    elif side == "openai":
        import torch
        import whisper

        from ports.whisper_max.convert import load_any

        dims, sd = load_any(tiny_en())
        m = whisper.model.Whisper(dims.to_openai())
        m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        m.eval()
        if case == "encoder":
            mel = torch.from_numpy(whisper.log_mel_spectrogram(
                whisper.pad_or_trim(torch.from_numpy(wav[: 30 * 16000]))).numpy())[None]

            def fn():
                with torch.no_grad():
                    m.encoder(mel)
        else:
            fn = lambda: whisper.transcribe(m, wav, temperature=0.0, fp16=False)["text"]  # noqa
    else:  # fw32 / fwint8
        import ctranslate2
        from faster_whisper import WhisperModel

        fw = WhisperModel(str(tiny_en()), device="cpu",
                          compute_type="float32" if side == "fw32" else "int8")
        if case == "encoder":
            import whisper
            import torch

            mel = whisper.log_mel_spectrogram(
                whisper.pad_or_trim(torch.from_numpy(wav[: 30 * 16000]))).numpy()[None]
            sv = ctranslate2.StorageView.from_array(mel)
            fn = lambda: fw.model.encode(sv, to_cpu=True)  # noqa: E731
        else:
            def fn():
                segs, _ = fw.transcribe(wav, beam_size=1, language="en", temperature=0.0)
                return "".join(s.text for s in segs)
    t_load = time.perf_counter()
    out = fn()
    t_first = time.perf_counter()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"case": case, "side": side, "audio_s": len(wav) / 16000,
            "load_s": t_load - t_audio, "first_call_s": t_first - t_load,
            "import_to_first_result_s": t_first - t0 - (t_audio - t0),
            "min_s": min(times), "median_s": float(np.median(times)), "repeats": repeats,
            "cpu_min_s": min(cpu),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "text": out.strip()[:60] if isinstance(out, str) else None}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", default="encoder,transcribe,base")
    ap.add_argument("--sides", default="max,openai,fw32,fwint8,max-torchdec")
    ap.add_argument("--min-seconds", type=float, default=35.0,
                    help="speech length at least (10: one 16.6-s window)")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "SIDE"))
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child, a.repeats, a.min_seconds)))
        return
    rows = []
    for case in a.cases.split(","):
        for side in a.sides.split(","):
            if case == "base" and side not in ("max", "openai"):
                continue
            if case == "encoder" and side == "max-torchdec":
                continue
            r = subprocess.run([sys.executable, __file__, "--child", case, side, "--repeats",
                                str(a.repeats), "--min-seconds", str(a.min_seconds)],
                               capture_output=True, text=True,
                               env=dict(os.environ))
            if r.returncode:
                print(r.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = {(r["case"]): r for r in rows if r["side"] == "openai"}
    print("\n| case | side | min s | median s | /openai (min) | CPU s (min) | load s | "
          "first call s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = base.get(r["case"])
        ratio = f"{r['min_s'] / o['min_s']:.2f}" if o else "-"
        print(f"| {r['case']} | {r['side']} | {r['min_s']:.3f} | {r['median_s']:.3f} | {ratio} | "
              f"{r['cpu_min_s']:.2f} | {r['load_s']:.1f} | {r['first_call_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
