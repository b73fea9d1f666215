"""Where whisper_max transcription time goes: wall time split into the MAX encoder, the MAX
decoder's cross-K/V and step graphs, and the rest (openai-whisper's Python: log-mel, the
DecodingTask search and logit filters, tokenizer, timestamp rules).

    python benchmarks/whisper_max_profile.py [--repeats N]
"""
import argparse
import collections
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from whisper_max_sides import _speech, tiny_en

    from ports.whisper_max import decoder as dec
    from ports.whisper_max import model as enc
    from ports.whisper_max.pipeline import WhisperMax

    spent = collections.defaultdict(float)
    calls = collections.Counter()

    def timed(cls, name, label):
        f = getattr(cls, name)

        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                return f(*args, **kw)
            finally:
                spent[label] += time.perf_counter() - t
                calls[label] += 1
        setattr(cls, name, wrapper)

    timed(enc.MaxAudioEncoder, "__call__", "encoder graph")
    timed(dec.MaxTextDecoder, "cross_kv", "decoder cross K/V graph")
    timed(dec.MaxTextDecoder, "step", "decoder step graph")
    wav = _speech()
    port = WhisperMax.from_pretrained(tiny_en())
    port.transcribe(wav, temperature=0.0)  # warm
    spent.clear()
    calls.clear()
    walls = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        port.transcribe(wav, temperature=0.0)
        walls.append(time.perf_counter() - t)
    total = sum(walls)
    print(f"{len(wav) / 16000:.1f} s audio, {a.repeats} runs, wall min {min(walls):.3f} s, "
          f"median {np.median(walls):.3f} s")
    print("| part | s per run | share | calls per run |\n|---|---|---|---|")
    for k, v in spent.items():
        print(f"| {k} | {v / a.repeats:.3f} | {v / total:.0%} | {calls[k] / a.repeats:.0f} |")
    rest = total - sum(spent.values())
    print(f"| rest (openai-whisper Python, log-mel, torch logit filters) | {rest / a.repeats:.3f} "
          f"| {rest / total:.0%} | - |")


if __name__ == "__main__":
    main()
