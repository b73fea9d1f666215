"""``ports transcribe``: Whisper with its encoder on MAX; parity/bench/demo/convert hooks."""
from __future__ import annotations

from pathlib import Path

FORMATS = ("txt", "srt", "vtt", "tsv", "json", "all")


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="speech to text, Whisper on MAX (whisper_max)",
                       description="Transcribe audio with openai-whisper's decoding logic over "
                       "the MAX encoder and decoder. Any sample rate / channel count (mixed to "
                       "mono, resampled to 16 kHz); any length (openai-whisper's 30-s windows).")
    p.add_argument("audio", nargs="+", help="audio files: paths or fsspec URLs (s3://...)")
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
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args) -> int:
    from ports.common.audio import audio_info

    from .pipeline import WhisperMax

    for audio in args.audio:  # a bad file is reported before the (slow) model load
        audio_info(audio)

    opts = transcribe_options(
        language=args.language, task=args.task, temperature=args.temperature,
        temperature_increment_on_fallback=args.temperature_increment_on_fallback,
        beam_size=args.beam_size, best_of=args.best_of, initial_prompt=args.initial_prompt,
        condition_on_previous_text=not args.no_condition_on_previous_text,
        word_timestamps=args.word_timestamps, verbose=True if args.verbose else None)
    model = WhisperMax.from_pretrained(args.model, decoder=args.decoder)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for audio in args.audio:
        result = model.transcribe(audio, **opts)
        write_transcript(result, audio, out_dir, args.output_format)
        print(result["text"].strip())
    return 0


WRITER_OPTIONS = {"highlight_words": False, "max_line_width": None, "max_line_count": None,
                  "max_words_per_line": None}


def transcribe_options(*, language=None, task="transcribe", temperature=0.0,
                       temperature_increment_on_fallback=0.2, beam_size=None, best_of=None,
                       initial_prompt=None, condition_on_previous_text=True,
                       word_timestamps=False, verbose=None) -> dict:
    """``WhisperMax.transcribe`` keyword arguments from the CLI options (defaults = the CLI's);
    shared with ``ports batch transcribe``."""
    import numpy as np

    t0, inc = temperature, temperature_increment_on_fallback
    temps = tuple(np.arange(t0, 1.0 + 1e-6, inc)) if inc > 0 else t0
    return dict(language=language, task=task, temperature=temps, beam_size=beam_size,
                best_of=best_of, initial_prompt=initial_prompt,
                condition_on_previous_text=condition_on_previous_text,
                word_timestamps=word_timestamps, verbose=verbose)


def write_transcript(result: dict, audio, out_dir, fmt: str) -> None:
    """openai-whisper's own writer for ``fmt``: ``out_dir/<audio stem>.<fmt>``."""
    from whisper.utils import get_writer

    get_writer(fmt, str(out_dir))(result, str(audio), WRITER_OPTIONS)


def convert(src: str, dst: str) -> None:
    from .convert import convert as _convert

    _convert(src, dst)
