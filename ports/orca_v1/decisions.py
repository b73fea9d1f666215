"""Turning per-window scores into per-minute decisions, as the originals do.

* ``production`` (fastai_inference.py, live system): per-second smoothing with pandas
  ``rolling(2).mean()`` (row 0 = window 0, rows 1..n-1 = rolling mean, extra last row = last
  window; n windows -> n + 1 rows); local positive = score > 0.5; minute positive when >= 3 local
  positives; confidence = 100 * mean of the smoothed scores > 0.5 (0 when none).
* ``fastai_unsmoothed``: the same code with ``smooth_predictions=False`` (the rule behind
  upstream's ``*_file_preds_reference.json``: raw window scores, >= 3 positives, mean * 100;
  the reference stores that percentage / 100).
* ``mean_thresholded`` / ``mean_top_k``: upstream model_v1 ``aggregate_predictions`` (confidence a
  fraction; global prediction = confidence >= global_threshold).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .config import AGGREGATIONS, DetectConfig



def pandas_rolling2_mean(x: np.ndarray) -> np.ndarray:
    """pandas ``Series.rolling(2).mean()`` bit for bit: a running Kahan-compensated sum with
    add/remove steps (pandas' ``roll_mean``), not ``(a + b) / 2``. Row 0 is NaN."""
    v = [float(a) for a in np.asarray(x, dtype=np.float64)]
    n = len(v)
    out = np.full(n, np.nan)
    sum_x = comp_add = comp_rem = 0.0
    nobs = neg_ct = same = 0
    prev = v[0] if n else 0.0

    def add(val):
        nonlocal sum_x, comp_add, nobs, neg_ct, same, prev
        if val == val:
            nobs += 1
            y = val - comp_add
            t = sum_x + y
            comp_add = t - sum_x - y
            sum_x = t
            if math.copysign(1.0, val) < 0:
                neg_ct += 1
            same = same + 1 if val == prev else 1
            prev = val

    def remove(val):
        nonlocal sum_x, comp_rem, nobs, neg_ct
        if val == val:
            nobs -= 1
            y = -val - comp_rem
            t = sum_x + y
            comp_rem = t - sum_x - y
            sum_x = t
            if math.copysign(1.0, val) < 0:
                neg_ct -= 1

    for i in range(n):
        if i == 0:
            add(v[0])
        else:
            if i >= 2:
                remove(v[i - 2])
            add(v[i])
        if nobs >= 2:
            r = sum_x / nobs
            if same >= nobs:
                r = prev
            elif neg_ct == 0 and r < 0:
                r = 0.0
            elif neg_ct == nobs and r > 0:
                r = 0.0
            out[i] = r
    return out


def smooth_production(scores: np.ndarray) -> np.ndarray:
    """n window scores -> n + 1 per-second rows (fastai_inference.py)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    rows = np.empty(s.size + 1)
    rows[:-1] = pandas_rolling2_mean(s)
    rows[0] = s[0]
    rows[-1] = s[-1]
    return rows


def _pandas_mean(x: np.ndarray) -> float:
    # pandas nanmean without bottleneck: values.sum() / count
    return float(np.sum(x, dtype=np.float64) / x.size)


@dataclass
class MinuteResult:
    offset_s: float                 # where this minute starts in the file
    duration_s: float
    starts: list                    # window starts (s, relative to the minute)
    window_scores: list             # softmax[positive] per window
    row_starts: list                # rows the local decisions refer to (s, relative)
    row_duration_s: float
    local_confidences: list
    local_predictions: list
    global_prediction: int
    global_confidence: float        # percent for production/fastai_unsmoothed, else a fraction
    aggregation: str = "production"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(scores, starts=None, cfg: DetectConfig = DetectConfig(), *, offset_s: float = 0.0,
              duration_s: float = 0.0) -> MinuteResult:
    s = np.asarray(scores, dtype=np.float64)
    starts = list(range(s.size)) if starts is None else [int(a) for a in starts]
    how = cfg.aggregation
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; one of {', '.join(AGGREGATIONS)}")
    if s.size == 0:
        return MinuteResult(offset_s, duration_s, [], [], [], 1.0, [], [], 0, 0.0, how,
                            note="shorter than one 2-s window: no prediction")
    if how == "production":
        rows = smooth_production(s)
        row_starts = [starts[0] + i for i in range(rows.size)]
        row_dur = 1.0
    else:
        rows, row_starts, row_dur = s, list(starts), 2.0
    local = (rows > cfg.threshold).astype(int)
    if how in ("production", "fastai_unsmoothed"):
        gp = int(local.sum() >= cfg.min_positive)
        pos = rows[rows > cfg.threshold]
        gc = _pandas_mean(pos) * 100 if pos.size else 0
    elif how == "mean_thresholded":
        pos = [float(c) for c, p in zip(rows, local) if p == 1]
        gc = sum(pos) / len(pos) if pos else 0.0
        gp = int(gc >= cfg.global_threshold)
    else:
        top = sorted((float(c) for c in rows), reverse=True)
        k = max(1, min(cfg.mean_top_k, len(top)))
        gc = sum(top[:k]) / k
        gp = int(gc >= cfg.global_threshold)
    return MinuteResult(offset_s, duration_s, starts, s.tolist(), row_starts, row_dur,
                        rows.tolist(), local.tolist(), gp, gc, how)


@dataclass
class Detection:
    start_s: float
    end_s: float
    confidence: float               # max local confidence inside
    minute_offset_s: float


def merge_detections(minutes: list[MinuteResult], *, only_positive_minutes: bool = True
                     ) -> list[Detection]:
    """Runs of local positives -> [start, end) intervals in file time; touching runs (also across
    minute borders) are joined."""
    out: list[Detection] = []
    for m in minutes:
        if only_positive_minutes and not m.global_prediction:
            continue
        for t0, p, c in zip(m.row_starts, m.local_predictions, m.local_confidences):
            if not p:
                continue
            a, b = m.offset_s + t0, m.offset_s + t0 + m.row_duration_s
            if out and a <= out[-1].end_s + 1e-9:
                out[-1].end_s = max(out[-1].end_s, b)
                out[-1].confidence = max(out[-1].confidence, c)
            else:
                out.append(Detection(a, b, c, m.offset_s))
    return out


def orcahello_json(m: MinuteResult, *, audio_uri: str = "", image_uri: str = "",
                   timestamp: str = "", source_guid: str = "", location: dict | None = None,
                   model_id: str = "FastAI", polling_interval_s: float = 60.0,
                   uid: str | None = None) -> dict:
    """The live system's per-minute document (globals.populate_metadata_json): predictions are
    spread evenly over the polling interval: start = i * 60 / n_rows, duration = 60 / n_rows."""
    import uuid

    n = len(m.local_predictions)
    step = polling_interval_s / n if n else 0.0
    preds, k = [], 0
    for i, (p, c) in enumerate(zip(m.local_predictions, m.local_confidences)):
        if p == 1:
            preds.append({"id": k, "startTime": i * step, "duration": step, "confidence": c})
            k += 1
    return {"id": uid or str(uuid.uuid4()), "modelId": model_id, "audioUri": audio_uri,
            "imageUri": image_uri, "reviewed": False, "timestamp": timestamp,
            "whaleFoundConfidence": m.global_confidence,
            "location": location or {"id": source_guid, "name": source_guid},
            "source_guid": source_guid, "predictions": preds}


__all__ = ["AGGREGATIONS", "pandas_rolling2_mean", "smooth_production", "aggregate",
           "MinuteResult", "Detection", "merge_detections", "orcahello_json"]
