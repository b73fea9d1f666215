"""``ports transcribe``: Whisper with its encoder on MAX; parity/bench/demo/convert hooks."""
from __future__ import annotations

import json
from pathlib import Path

FORMATS = ("txt", "srt", "vtt", "tsv", "json", "all")


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="speech to text, Whisper on MAX (whisper_max)",
                       description="Transcribe audio with openai-whisper's decoding logic over "
                       "the MAX encoder and decoder. Any sample rate / channel count (mixed to "
                       "mono, resampled to 16 kHz); any length (openai-whisper's 30-s windows).")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--model", default="tiny.en",
                   help="model name (tiny.en, base, ..., large-v3), checkpoint file/folder "
                   "(openai .pt, HF transformers folder, CTranslate2 folder, converted "
                   ".safetensors) or HF repo id; default tiny.en")
    p.add_argument("--output-format", "-f", default="txt", choices=FORMATS)
    p.add_argument("--output-dir", "-o", default=".", help="where the output files go")
    p.add_argument("--language", default=None,
                   help="spoken language (openai-whisper names or codes); default: detect")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--temperature-increment-on-fallback", type=float, default=0.2,
                   help="as openai-whisper; 0 disables fallback")
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--best-of", type=int, default=None)
    p.add_argument("--initial-prompt", default=None)
    p.add_argument("--no-condition-on-previous-text", action="store_true")
    p.add_argument("--word-timestamps", action="store_true",
                   help="word timings from the alignment heads' cross-attention (computed "
                   "with openai-whisper's torch decoder on the same weights)")
    p.add_argument("--decoder", default="max", choices=["max", "torch"],
                   help="text decoder: the MAX graph (default) or openai-whisper's torch one")
    p.add_argument("--verbose", action="store_true", help="print segments as they are decoded")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args) -> int:
    import numpy as np
    from whisper.utils import get_writer

    from .pipeline import WhisperMax

    t0, inc = args.temperature, args.temperature_increment_on_fallback
    temperature = tuple(np.arange(t0, 1.0 + 1e-6, inc)) if inc > 0 else t0
    model = WhisperMax.from_pretrained(args.model, decoder=args.decoder)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = get_writer(args.output_format, str(out_dir))
    for audio in args.audio:
        result = model.transcribe(
            audio, language=args.language, task=args.task, temperature=temperature,
            beam_size=args.beam_size, best_of=args.best_of, initial_prompt=args.initial_prompt,
            condition_on_previous_text=not args.no_condition_on_previous_text,
            word_timestamps=args.word_timestamps, verbose=True if args.verbose else None)
        writer(result, str(audio), {"highlight_words": False, "max_line_width": None,
                                    "max_line_count": None, "max_words_per_line": None})
        print(result["text"].strip())
    return 0


def run_parity(quick: bool = False):
    from .parity import full_report

    return full_report(quick=quick)


def run_bench(quick: bool = False):
    from .bench import run

    return run(quick=quick)


def demo(out_dir: Path):
    """Transcribe generated espeak-ng speech (> 30 s) and check it against openai-whisper."""
    import numpy as np

    from ports.common.audio import write_audio
    from ports.common.samples import espeak

    from .parity import real_report

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


def convert(src: str, dst: str) -> None:
    from .convert import convert as _convert

    _convert(src, dst)
