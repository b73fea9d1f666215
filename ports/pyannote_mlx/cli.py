"""``ports segment``: pyannote segmentation-3.0 in MLX; parity/bench/demo/convert hooks."""
from __future__ import annotations

import json
from pathlib import Path

from . import DEFAULT_SOURCE as REPO


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="speech / speaker-count segmentation (pyannote segmentation-3.0, MLX)",
        description="pyannote segmentation-3.0 on any audio file (downmixed to mono, resampled "
        "to 16 kHz), 10-s windows every 1 s like pyannote.audio's Inference. Prints the speech "
        "regions (VoiceActivityDetection path) and writes RTTM/JSON/plot/raw arrays.")
    p.add_argument("audio", help="audio file (anything libsndfile reads): a path "
                   "or an fsspec URL (s3://...)")
    p.add_argument("--model", default=REPO,
                   help=f"HF repo id, folder, pytorch_model.bin or safetensors (default {REPO}; "
                   "the repo is gated: set HF_TOKEN)")
    p.add_argument("--rttm", metavar="F", help="speech regions as RTTM (label SPEECH)")
    p.add_argument("--json", metavar="F",
                   help="speech regions, speaker-count segments, overlap regions")
    p.add_argument("--plot", metavar="F.png",
                   help="speech score, speaker count and per-chunk local speaker activity")
    p.add_argument("--dump", metavar="F.npz",
                   help="raw arrays: logprobs (C,589,7), multilabel (C,589,3), vad (T,1), count")
    p.add_argument("--batch-size", type=int, default=None,
                   help="chunks per forward (default: 8 with the CPU's C++ kernels, else 128)")
    p.add_argument("--step", type=float, default=None, help="chunk step in s (default 1.0)")
    p.set_defaults(func=cmd_segment)


def count_segments(count, frames) -> list[tuple[float, float, int]]:
    """Runs of constant speaker count as (start, end, count), times at frame middles."""
    c = count[:, 0].astype(int)
    if c.size == 0:
        return []
    edges = [0] + [i for i in range(1, c.size) if c[i] != c[i - 1]] + [c.size]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append((frames.middle(a) - frames.step / 2 if a else 0.0,
                    frames.middle(b - 1) + frames.step / 2, int(c[a])))
    return out


def rttm_text(uri: str, regions) -> str:
    uri = uri.replace(" ", "_") or "audio"
    return "".join(f"SPEAKER {uri} 1 {s:.3f} {e - s:.3f} <NA> <NA> SPEECH <NA> <NA>\n"
                   for s, e in regions)


def write_rttm(path, uri: str, regions) -> None:
    from ports.common.atomic import write_text

    write_text(path, rttm_text(uri, regions))


def segment_document(seg, audio, model) -> tuple[list, dict]:
    """(speech regions, the ``--json`` document); shared with ``ports batch segment``."""
    count, count_frames = seg.speaker_count()
    regions = seg.speech_regions()
    segs = count_segments(count, count_frames)
    doc = {"audio": str(audio), "model": str(model), "duration_s": seg.duration_s,
           "sample_rate": seg.sample_rate, "chunks": int(seg.multilabel.shape[0]),
           "chunk_duration_s": seg.chunks.duration, "chunk_step_s": seg.chunks.step,
           "speech": [[s, e] for s, e in regions],
           "speaker_count": [[s, e, k] for s, e, k in segs],
           "overlap": [[s, e] for s, e, k in segs if k >= 2]}
    return regions, doc


def segment_json_text(doc: dict) -> str:
    return json.dumps(doc, indent=1)


def plot(path, seg, vad, vad_frames, count, count_frames, regions) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t_vad = vad_frames.start + vad_frames.duration / 2 + np.arange(vad.shape[0]) * vad_frames.step
    t_cnt = (count_frames.start + count_frames.duration / 2
             + np.arange(count.shape[0]) * count_frames.step)
    fig, ax = plt.subplots(3, 1, figsize=(12, 8), gridspec_kw={"height_ratios": [1, 1, 2]})
    ax[0].plot(t_vad, vad[:, 0], lw=0.8)
    for s, e in regions:
        ax[0].axvspan(s, e, color="tab:green", alpha=0.2, lw=0)
    ax[0].set_ylabel("speech score")
    ax[0].set_xlim(0, seg.duration_s)
    ax[1].step(t_cnt, count[:, 0], where="mid", lw=0.8)
    ax[1].set_ylabel("speakers")
    ax[1].set_xlim(0, seg.duration_s)
    # local speakers are permutation-invariant per chunk: one row per chunk, 3 colours
    k = seg.multilabel.shape[-1]
    img = np.zeros(seg.multilabel.shape[:2] + (3,))
    colours = np.array([[0.85, 0.2, 0.2], [0.2, 0.5, 0.9], [0.2, 0.7, 0.3]])[:k]
    img += seg.multilabel @ colours
    img = np.clip(img, 0, 1)
    c = seg.multilabel.shape[0]
    ax[2].imshow(img, aspect="auto", interpolation="nearest", origin="lower",
                 extent=(0, seg.chunks.duration, seg.chunks.start,
                         seg.chunks.start + c * seg.chunks.step))
    ax[2].set_xlabel("time within chunk (s)")
    ax[2].set_ylabel("chunk start (s)")
    ax[2].set_title("local speakers per chunk (red/blue/green = speaker 1/2/3)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_segment(args) -> int:
    import numpy as np

    from ports.common.audio import audio_info

    from .pipeline import from_pretrained, segment_file

    audio_info(args.audio)  # a bad file is reported before the model load
    inf = from_pretrained(args.model, batch_size=args.batch_size, step=args.step)
    seg = segment_file(inf, args.audio, keep_logprobs=bool(args.dump), progress=True)
    vad, vad_frames = seg.vad()
    count, count_frames = seg.speaker_count()
    regions = seg.speech_regions()
    speech = sum(e - s for s, e in regions)
    print(f"{args.audio}: {seg.duration_s:.1f} s, {seg.multilabel.shape[0]} chunks, "
          f"{len(regions)} speech region(s), {speech:.1f} s of speech, "
          f"up to {int(count.max()) if count.size else 0} simultaneous speaker(s)")
    for s, e in regions[:50]:
        print(f"  {s:9.3f} - {e:9.3f} s  SPEECH")
    if len(regions) > 50:
        print(f"  ... {len(regions) - 50} more")
    if args.rttm:
        write_rttm(args.rttm, Path(args.audio).stem, regions)
        print(f"wrote {args.rttm}")
    if args.json:
        from ports.common.atomic import write_text

        write_text(args.json, segment_json_text(segment_document(seg, args.audio, args.model)[1]))
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot, seg, vad, vad_frames, count, count_frames, regions)
        print(f"wrote {args.plot}")
    if args.dump:
        np.savez_compressed(
            args.dump, logprobs=seg.logprobs, multilabel=seg.multilabel, vad=vad,
            speaker_count=count,
            chunks=np.array([seg.chunks.start, seg.chunks.duration, seg.chunks.step]),
            frames=np.array([vad_frames.start, vad_frames.duration, vad_frames.step]),
            num_samples=np.array(seg.num_samples), sample_rate=np.array(seg.sample_rate))
        print(f"wrote {args.dump}")
    return 0


def convert(src: str, dst: str) -> None:
    from .convert import convert as _convert

    _convert(src, dst)
