"""Start-up time and RSS, step by step, of one process transcribing a 28-s clip twice.

    python benchmarks/whisper_max_start.py max|torch|openai

``max``/``torch``: ``WhisperMax.from_pretrained`` with that decoder (graphs from the artifact cache
when stored); ``openai``: openai-whisper's model on the same converted tiny.en weights. Prints
elapsed time, RSS and peak RSS after each step.
"""
import resource
import sys
import time

T0 = time.perf_counter()


def mark(what: str) -> None:
    with open("/proc/self/status") as fh:
        rss = next(int(ln.split()[1]) // 1024 for ln in fh if ln.startswith("VmRSS"))
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{time.perf_counter() - T0:7.2f} s  rss {rss:5d} MB  peak {hwm:5d} MB  {what}", flush=True)


def main(side: str) -> None:
    import torch
    import whisper

    mark("import torch + whisper")
    from ports_parity.real_weights import whisper_tiny_en
    from ports_parity.whisper_max.bench import _speech

    wav = _speech(35.0)[: 28 * 16000]
    mark("audio")
    if side == "openai":
        from ports.whisper_max.convert import load_any

        dims, sd = load_any(whisper_tiny_en())
        model = whisper.model.Whisper(dims.to_openai())
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        model.eval()
        del sd
        transcribe = model.transcribe
    else:
        from ports.whisper_max.pipeline import WhisperMax

        port = WhisperMax.from_pretrained(whisper_tiny_en(), decoder=side)
        transcribe = port.transcribe
    mark("model loaded")
    for i in (1, 2):
        text = transcribe(wav, temperature=0.0)["text"]
        mark(f"transcribe {i}: {text[:40]!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "max")
