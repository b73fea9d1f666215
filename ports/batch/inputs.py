"""``ports batch`` inputs: files, folders (recursive), globs and manifests -> sources, each with the
relative path its outputs take under OUT."""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ports.common.hls import is_hls

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".opus", ".caf", ".w64", ".rf64",
              ".au", ".m4a"}


@dataclass(frozen=True)
class Source:
    path: str       # as given / found (absolute when found inside a folder)
    rel: str        # output stem under OUT, POSIX, without extension
    kind: str       # "audio" | "hls"


class InputError(ValueError):
    pass


def _rel_stem(p: Path, base: Path | None) -> str:
    if base is not None:
        try:
            r = p.resolve().relative_to(base.resolve())
        except ValueError:
            r = None
        if r is not None and str(r) != ".":
            return str(PurePosixPath(*r.parts).with_suffix("")) if p.suffix.lower() != ".m3u8" \
                else _hls_rel(r)
    # outside any base: the name alone (an HLS playlist takes its folder's name)
    if p.suffix.lower() == ".m3u8":
        return p.resolve().parent.name
    return p.stem if not p.is_dir() else p.name


def _hls_rel(r: Path) -> str:
    """A playlist inside a walked folder is named by its folder (``<unix time>.json``)."""
    parent = PurePosixPath(*r.parts[:-1])
    return str(parent) if parent.parts else PurePosixPath(r.parts[-1]).stem


def _walk(root: Path) -> list[Source]:
    """Audio files and HLS folders below ``root``; .ts segments of an HLS folder are not inputs."""
    out: list[Source] = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        dp = Path(d)
        m3u8 = sorted(f for f in files if f.lower().endswith(".m3u8"))
        if m3u8:
            rel = dp.relative_to(root)
            stem = str(PurePosixPath(*rel.parts)) if rel.parts else root.resolve().name
            out.append(Source(str(dp), stem, "hls"))
            dirs[:] = []  # an HLS folder is one stream
            continue
        for f in sorted(files):
            p = dp / f
            if p.suffix.lower() in AUDIO_EXTS:
                out.append(Source(str(p), str(PurePosixPath(*p.relative_to(root).with_suffix(
                    "").parts)), "audio"))
    return out


def _one(p: Path, base: Path | None) -> list[Source]:
    if p.is_dir():
        if is_hls(p):
            return [Source(str(p), _rel_stem(p, base) if base else p.resolve().name, "hls")]
        return _walk(p)
    kind = "hls" if p.suffix.lower() == ".m3u8" else "audio"
    return [Source(str(p), _rel_stem(p, base), kind)]


def read_manifest(path: str | os.PathLike) -> list[str]:
    """One path per line (``#`` comments, blanks skipped), or a CSV whose header has ``path``."""
    m = Path(path)
    if not m.is_file():
        raise InputError(f"manifest {m}: no such file")
    text = m.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    head = next(csv.reader([lines[0]]))
    if "path" in [h.strip() for h in head] and (len(head) > 1 or m.suffix.lower() == ".csv"):
        rows = csv.DictReader(lines, skipinitialspace=True)
        return [r["path"].strip() for r in rows if (r.get("path") or "").strip()]
    if [h.strip() for h in head] == ["path"]:
        lines = lines[1:]
    return [ln.strip() for ln in lines]


def expand(inputs: list[str], manifest: str | None = None) -> list[Source]:
    """Sources in a stable order; a name that matches nothing, or two inputs that would write the
    same output, fail up front naming them."""
    out: list[Source] = []
    for s in inputs:
        if glob.has_magic(s):
            hits = sorted(glob.glob(s, recursive=True))
            if not hits:
                raise InputError(f"{s}: the pattern matches no file")
            # relative to the pattern's fixed prefix folder
            fixed = []
            for part in Path(s).parts:
                if glob.has_magic(part):
                    break
                fixed.append(part)
            base = Path(*fixed) if fixed else Path(".")
            for h in hits:
                hp = Path(h)
                if hp.suffix.lower() == ".ts":
                    continue
                out += _one(hp, base)
        else:
            p = Path(s).expanduser()
            if not p.exists():
                raise InputError(f"{p}: no such file or folder")
            out += _one(p, None)
    if manifest is not None:
        mdir = Path(manifest).resolve().parent
        for s in read_manifest(manifest):
            p = Path(s).expanduser()
            if not p.is_absolute():
                p = mdir / p
            # missing manifest entries become failed rows (the job may run for days)
            if p.exists() and p.is_dir():
                out += _one(p, mdir)
            else:
                kind = "hls" if p.suffix.lower() == ".m3u8" else "audio"
                out.append(Source(str(p), _rel_stem(p, mdir), kind))
    seen: dict[str, str] = {}
    uniq: list[Source] = []
    for src in out:
        if src.rel in seen:
            if seen[src.rel] == src.path:
                continue
            raise InputError(f"{seen[src.rel]} and {src.path} would both write {src.rel}.*; "
                             "pass their common parent folder instead")
        seen[src.rel] = src.path
        uniq.append(src)
    return uniq


__all__ = ["Source", "InputError", "AUDIO_EXTS", "expand", "read_manifest"]
