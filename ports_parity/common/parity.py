"""Port-vs-original metrics and the stage-by-stage parity report."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def metrics(port, ref) -> dict[str, float | None]:
    """max_abs, max_rel, mean_abs, pearson, cosine, snr_db (ref as signal), argmax_agree (last axis)."""
    a = _np(port).astype(np.float64)
    b = _np(ref).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: port {a.shape} vs original {b.shape}")
    d = a - b
    ad = np.abs(d)
    out: dict[str, float | None] = {
        "max_abs": float(ad.max()) if ad.size else 0.0,
        "mean_abs": float(ad.mean()) if ad.size else 0.0,
        "ref_scale": float(np.abs(b).max()) if b.size else 0.0,
    }
    out["max_rel"] = float((ad / np.maximum(np.abs(b), 1e-12)).max()) if ad.size else 0.0
    af, bf = a.ravel(), b.ravel()
    na, nb = np.linalg.norm(af), np.linalg.norm(bf)
    out["cosine"] = float(af @ bf / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    sa, sb = af.std(), bf.std()
    out["pearson"] = (float(np.corrcoef(af, bf)[0, 1]) if sa > 0 and sb > 0 and af.size > 1
                      else (1.0 if np.array_equal(af, bf) else None))
    noise = float((d * d).sum())
    sig = float((b * b).sum())
    out["snr_db"] = math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf)
    out["argmax_agree"] = (float((a.argmax(-1) == b.argmax(-1)).mean())
                           if a.ndim >= 1 and a.shape[-1] > 1 else None)
    return out


_TOL_CHECKS = {
    "max_abs": lambda m, t: m["max_abs"] <= t,
    "mean_abs": lambda m, t: m["mean_abs"] <= t,
    "max_abs_rel_scale": lambda m, t: m["max_abs"] <= t * max(m["ref_scale"], 1e-12),
    "cosine_min": lambda m, t: m["cosine"] >= t,
    "pearson_min": lambda m, t: m["pearson"] is not None and m["pearson"] >= t,
    "snr_db_min": lambda m, t: m["snr_db"] >= t,
    "argmax_agree_min": lambda m, t: m["argmax_agree"] is not None and m["argmax_agree"] >= t,
    "exact": lambda m, t: (m["max_abs"] == 0.0) == bool(t),
}


@dataclass
class Stage:
    name: str
    shape: tuple
    passed: bool
    tolerance: dict
    metrics: dict = field(default_factory=dict)
    detail: str = ""

    def row(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "passed": self.passed,
             "tolerance": self.tolerance, "detail": self.detail}
        # JSON has no inf/nan: an exact match's SNR is written as the string "inf"
        d.update({k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in self.metrics.items()})
        return d


class ParityReport:
    """Stages compared in order; ``passed`` only if every stage passed."""

    def __init__(self, port: str, **info):
        self.port = port
        self.info = info
        self.stages: list[Stage] = []

    def compare(self, name: str, port, ref, detail: str = "", **tol) -> Stage:
        if not tol:
            raise ValueError(f"stage {name}: give at least one tolerance")
        unknown = set(tol) - set(_TOL_CHECKS)
        if unknown:
            raise ValueError(f"stage {name}: unknown tolerance keys {sorted(unknown)}")
        try:
            m = metrics(port, ref)
            passed = all(_TOL_CHECKS[k](m, v) for k, v in tol.items())
            shape = tuple(_np(ref).shape)
        except ValueError as err:  # shape mismatch is a failed stage, not a crash
            m, passed, shape, detail = {}, False, tuple(_np(ref).shape), str(err)
        st = Stage(name, shape, passed, dict(tol), m, detail)
        self.stages.append(st)
        return st

    def check(self, name: str, passed: bool, detail: str = "", **values) -> Stage:
        st = Stage(name, (), bool(passed), {"check": True}, dict(values), detail)
        self.stages.append(st)
        return st

    def __getitem__(self, name: str) -> Stage:
        for st in self.stages:
            if st.name == name:
                return st
        raise KeyError(name)

    @property
    def passed(self) -> bool:
        return bool(self.stages) and all(s.passed for s in self.stages)

    def failures(self) -> list[Stage]:
        return [s for s in self.stages if not s.passed]

    def assert_passed(self) -> None:
        if not self.passed:
            raise AssertionError(f"{self.port} parity failed:\n{self.table(only_failed=True)}")

    def table(self, only_failed: bool = False) -> str:
        rows = [("stage", "shape", "max_abs", "mean_abs", "cos/snr", "tolerance", "ok")]
        for s in self.stages:
            if only_failed and s.passed:
                continue
            m = s.metrics
            extra = ""
            if "cosine" in m:
                extra = f"{m['cosine']:.6f}"
                if m.get("snr_db") is not None and math.isfinite(m["snr_db"]):
                    extra += f" / {m['snr_db']:.1f}dB"
            elif m:
                extra = ", ".join(f"{k}={v}" for k, v in m.items())[:40]
            tol = ", ".join(f"{k}={v}" for k, v in s.tolerance.items() if k != "check")
            rows.append((s.name, "x".join(map(str, s.shape)) or "-",
                         f"{m['max_abs']:.3g}" if "max_abs" in m else "-",
                         f"{m['mean_abs']:.3g}" if "mean_abs" in m else "-",
                         extra, tol or (s.detail[:40] or "check"), "PASS" if s.passed else "FAIL"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        head = f"{self.port}: {'PASSED' if self.passed else 'FAILED'} " \
               f"({sum(s.passed for s in self.stages)}/{len(self.stages)} stages)"
        return head + "\n" + "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "passed": self.passed, "info": self.info,
                "stages": [s.row() for s in self.stages]}

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def merge(port: str, reports: list[ParityReport]) -> ParityReport:
    """One report from several (e.g. per-stage groups)."""
    out = ParityReport(port)
    for r in reports:
        out.stages.extend(r.stages)
        out.info.update(r.info)
    return out


__all__ = ["metrics", "ParityReport", "Stage", "merge", "asdict"]
