"""``ports transcribe``: Whisper with its encoder on MAX; parity/bench/demo/convert hooks."""
from __future__ import annotations

from pathlib import Path

FORMATS = ("txt", "srt", "vtt", "tsv", "json", "all")


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="speech to text, Whisper encoder on MAX (whisper_max)",
                       description="Transcribe audio with openai-whisper's decoding over the MAX "
                       "encoder. Any sample rate / channel count (mixed to mono, resampled to "
                       "16 kHz); any length (openai-whisper's 30-s windows).")
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
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print segments as they are decoded")
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args) -> int:
    import numpy as np
    from whisper.utils import get_writer

    from ports.common.audio import audio_info

    from .pipeline import WhisperMax

    for audio in args.audio:  # a bad file is reported before the (slow) model load
        audio_info(audio)
    t0, inc = args.temperature, args.temperature_increment_on_fallback
    temperature = tuple(np.arange(t0, 1.0 + 1e-6, inc)) if inc > 0 else t0
    model = WhisperMax.from_pretrained(args.model)
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


def convert(src: str, dst: str) -> None:
    from .convert import convert as _convert

    _convert(src, dst)
