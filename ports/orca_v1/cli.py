"""``ports detect``: OrcaHello v1 orca-call detection; parity/bench/demo/convert hooks."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .config import AGGREGATIONS, HF_REPO, DetectConfig

_D = DetectConfig()  # the CLI defaults are the config defaults, declared once there

RAVEN_HEADER = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                "Low Freq (Hz)", "High Freq (Hz)", "Confidence", "Begin File"]


def register(sub) -> None:
    p = sub.add_parser("detect", help="OrcaHello v1 orca-call detection (orca_v1)",
                       description="Detect Southern Resident killer-whale calls. Files are cut "
                       "into 60-s minutes like the live system; each minute is scored with 2-s "
                       "windows (1-s hop) and decided with the production rule.")
    p.add_argument("audio", nargs="+", help="audio files (WAV: PCM 8/16/24/32-bit or float32), "
                   "HLS playlists (.m3u8) or folders holding one; paths or fsspec URLs (s3://...)")
    p.add_argument("--model", default=HF_REPO,
                   help=f"HF repo id, folder or checkpoint (model.safetensors, fastai model.pkl); "
                   f"default {HF_REPO}")
    p.add_argument("--json", metavar="F", help="results + OrcaHello documents (positive minutes)")
    p.add_argument("--csv", metavar="F", help="per-row decisions as CSV")
    p.add_argument("--raven", metavar="F", help="Raven selection table of merged detections")
    p.add_argument("--plot", metavar="F.png", help="spectrogram with detections marked")
    p.add_argument("--dump-spectrograms", metavar="F.npz",
                   help="write starts, ends, mels (the exact model inputs)")
    p.add_argument("--aggregation", default=_D.aggregation,
                   choices=AGGREGATIONS)
    p.add_argument("--threshold", type=float, default=_D.threshold,
                   help=f"local positive when score > this (default {_D.threshold})")
    p.add_argument("--min-positive", type=int, default=_D.min_positive,
                   help=f"positive minute with at least this many local positives "
                   f"(default {_D.min_positive})")
    p.add_argument("--whole-file", action="store_true",
                   help="treat each file as one input instead of 60-s minutes")
    p.add_argument("--batch-size", type=int, default=_D.batch_size)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--source-guid", default="", help="hydrophone id for the OrcaHello JSON")
    p.set_defaults(func=cmd_detect)


def cmd_detect(args) -> int:
    import dataclasses

    import numpy as np
    import torch

    from .config import OrcaConfig
    from .pipeline import OrcaDetector

    if args.threads:
        torch.set_num_threads(args.threads)
    det_cfg = dataclasses.replace(_D, threshold=args.threshold, min_positive=args.min_positive,
                                  aggregation=args.aggregation, batch_size=args.batch_size,
                                  minute_s=None if args.whole_file else _D.minute_s)
    cfg = dataclasses.replace(OrcaConfig(), detect=det_cfg)
    from ports.common.hls import is_hls

    from .frontend import source_info

    for a in args.audio:  # a bad file is reported before the model load (HLS: per segment)
        if not is_hls(a):
            source_info(a)
    det = OrcaDetector.from_pretrained(args.model, cfg=cfg, device=args.device)
    keep = bool(args.dump_spectrograms)
    results = []
    for a in args.audio:
        r = det.detect_file(a, keep_mels=keep, progress=True)
        results.append(r)
        pos = sum(m.global_prediction for m in r.minutes)
        print(f"{a}: {r.duration_s:.1f} s, {len(r.minutes)} minute(s), {pos} positive, "
              f"{len(r.detections)} detection(s)")
        if r.note:
            print(f"  note: {r.note}")
        for d in r.detections:
            print(f"  {d.start_s:8.1f} - {d.end_s:8.1f} s  confidence {d.confidence:.3f}")
    if args.json:
        write_detect_json(args.json, results, source_guid=args.source_guid)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "minute_start_s", "start_s", "duration_s", "confidence",
                        "local_prediction", "minute_prediction", "minute_confidence"])
            for r in results:
                for m in r.minutes:
                    for t, c, p in zip(m.row_starts, m.local_confidences, m.local_predictions):
                        w.writerow([r.path, m.offset_s, m.offset_s + t, m.row_duration_s, c, p,
                                    m.global_prediction, m.global_confidence])
    if args.raven:
        with open(args.raven, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(RAVEN_HEADER)
            k = 0
            for r in results:
                for d in r.detections:
                    k += 1
                    w.writerow([k, "Spectrogram 1", 1, f"{d.start_s:.3f}", f"{d.end_s:.3f}",
                                0, 10000, f"{d.confidence:.6f}", Path(r.path).name])
    if args.dump_spectrograms:
        np.savez_compressed(
            args.dump_spectrograms,
            starts=np.concatenate([r.starts for r in results]).astype(np.int32),
            ends=np.concatenate([r.ends for r in results]).astype(np.int32),
            mels=np.concatenate([r.mels for r in results]).astype(np.float32),
            file_index=np.concatenate([np.full(len(r.starts), i, np.int32)
                                       for i, r in enumerate(results)]),
            files=np.array([r.path for r in results]))
    if args.plot:
        plot_detections(results[0], args.plot)
    return 0


def detect_document(results, *, source_guid: str = "") -> dict:
    """The ``--json`` document (also what ``ports batch detect`` writes per input): every file's
    result, plus one OrcaHello document per positive minute. Timestamps are absolute ISO UTC
    when the input is an HLS folder named by its unix start time (as the live system writes
    them), else ``+<offset>s``. Document ids are uuid5 of (audio, timestamp): reruns give the
    same ids."""
    import uuid

    from ports.common.hls import is_hls, iso_utc, stream_start_unix

    from .decisions import orcahello_json

    docs = []
    for r in results:
        t0 = stream_start_unix(r.path) if is_hls(r.path) else None
        for m in r.minutes:
            if m.global_prediction:
                ts = f"+{m.offset_s:.0f}s" if t0 is None else iso_utc(t0 + m.offset_s)
                docs.append(orcahello_json(m, audio_uri=r.path, source_guid=source_guid,
                                           timestamp=ts,
                                           uid=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                              f"{r.path}#{ts}"))))
    return {"files": [r.to_dict() for r in results], "orcahello": docs}


def write_detect_json(path, results, *, source_guid: str = "") -> None:
    from ports.common.atomic import write_text

    write_text(path, json.dumps(detect_document(results, source_guid=source_guid), indent=2))


def plot_detections(result, out_png: str, max_cols: int = 4000) -> None:
    """Coarse spectrogram of the whole file (streamed by minute) with detections shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.signal import spectrogram

    from .frontend import iter_minutes

    cols, sr = [], None
    for _, x, src in iter_minutes(result.path, _D.minute_s):
        sr = src.samplerate
        f, t, s = spectrogram(x.mean(axis=1), fs=sr, nperseg=1024, noverlap=0)
        cols.append(s[f <= 10000])  # the model sees 0..10 kHz (20 kHz resample)
    s = np.concatenate(cols, axis=1)
    step = max(1, s.shape[1] // max_cols)
    if step > 1:
        s = s[:, : s.shape[1] // step * step].reshape(s.shape[0], -1, step).mean(axis=2)
    db = 10 * np.log10(np.maximum(s, 1e-12))
    fig, ax = plt.subplots(figsize=(14, 4))
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma",
              extent=[0, result.duration_s, 0, min(sr / 2, 10000) / 1000],
              vmin=np.percentile(db, 5), vmax=db.max())
    for d in result.detections:
        ax.axvspan(d.start_s, d.end_s, color="cyan", alpha=0.3)
    for m in result.minutes:
        if m.global_prediction:
            ax.axvline(m.offset_s, color="lime", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    ax.set_title(f"{Path(result.path).name}: {len(result.detections)} detection(s)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def convert(src: str, dst: str) -> None:
    from .convert import convert as _convert

    _convert(src, dst)
