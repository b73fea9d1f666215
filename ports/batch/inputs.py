"""``ports batch`` inputs: files, folders (recursive), globs and manifests -> sources, each with the
relative path its outputs take under OUT.

Any of them may be an fsspec URL (``s3://bucket/prefix/``, ``gs://``, ``https://``, ``file://``,
``memory://``): a URL folder (prefix) is listed like a local folder and mapped the same way
(outputs relative to it); found objects keep the user's URL spelling as their ``path``. An
unknown protocol, a missing backend package or a missing URL fails up front.
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ports.common import remote
from ports.common.hls import is_hls
from ports.common.remote import is_url

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


# ------------------------------------------------------------------ fsspec URLs
def _url_fs(url: str):
    """(fs, path) after checking that ``url`` exists (``InputError`` naming it otherwise)."""
    fs, p = remote.url_fs(url)  # unknown protocol / missing backend: UserError, up front
    try:
        ok = fs.exists(p)
    except OSError as err:  # credentials, permissions, network
        raise InputError(f"{url}: cannot access ({type(err).__name__}: {err})") from None
    if not ok:
        raise InputError(f"{url}: no such file or folder")
    return fs, p


def _url_file(url: str, rel_base: str | None) -> Source:
    """One object; ``rel_base``: the URL folder its output path is relative to (None: by name,
    a playlist by its folder's name), as ``_rel_stem`` does for local files."""
    p = remote.url_path(url)
    kind = "hls" if p.suffix.lower() == ".m3u8" else "audio"
    if rel_base is not None:
        r = _below(url, rel_base)
        if r:
            rp = PurePosixPath(r)
            return Source(url, _hls_rel(Path(*rp.parts)) if kind == "hls"
                          else str(rp.with_suffix("")), kind)
    return Source(url, p.parent.name if kind == "hls" else p.stem, kind)


def _below(url: str, base: str) -> str | None:
    """``url``'s path below the URL folder ``base`` (POSIX), or None."""
    b = str(remote.url_path(base)).rstrip("/")
    u = str(remote.url_path(url))
    if remote.protocol(url) != remote.protocol(base) or not u.startswith(b + "/"):
        return None
    return u[len(b) + 1:]


def _walk_url(fs, root: str, url: str) -> list[Source]:
    """``_walk`` for a URL folder, from one listing (``fs.find``): a folder holding a playlist is
    one HLS stream and nothing below it is an input."""
    files = [PurePosixPath(f[len(root.rstrip("/")):].lstrip("/")) for f in fs.find(root)]
    hls_dirs = {r.parent for r in files if r.suffix.lower() == ".m3u8"}
    hls_dirs = {d for d in hls_dirs if not any(a in hls_dirs for a in d.parents)}
    found = [((d.parts, ""), Source(remote.join(url, str(d)), str(d), "hls")) for d in hls_dirs]
    found += [((r.parent.parts, r.name), Source(remote.join(url, str(r)),
                                                str(r.with_suffix("")), "audio"))
              for r in files if r.suffix.lower() in AUDIO_EXTS
              and not any(d == r.parent or d in r.parent.parents for d in hls_dirs)]
    return [src for _, src in sorted(found, key=lambda t: t[0])]  # os.walk's order


def _one_url(url: str, base: str | None = None) -> list[Source]:
    """``_one`` for a URL: a folder (listed), an HLS folder, or one object."""
    fs, p = _url_fs(url)
    if not fs.isdir(p):
        return [_url_file(url, base)]
    if is_hls(url):
        r = _below(url, base) if base is not None else None
        return [Source(url, r or remote.url_path(url).name, "hls")]
    return _walk_url(fs, p, url)


def _url_entry(url: str, base: str | None) -> list[Source]:
    """A manifest entry: protocol problems fail up front, a missing object becomes its failed
    row (no request per audio file; a name without an audio suffix may be a folder)."""
    fs, p = remote.url_fs(url)
    if remote.url_path(url).suffix.lower() not in AUDIO_EXTS | {".m3u8"} and fs.isdir(p):
        return _one_url(url, base)
    return [_url_file(url, base)]


def _glob_url(pattern: str) -> list[Source]:
    """``fs.glob``; outputs relative to the pattern's fixed prefix folder, as for local globs."""
    fs, p = remote.url_fs(pattern)
    try:
        hits = fs.glob(p, detail=True)
    except OSError as err:
        raise InputError(f"{pattern}: cannot list ({type(err).__name__}: {err})") from None
    if not hits:
        raise InputError(f"{pattern}: the pattern matches no file")
    head, _, rest = pattern.partition("://")
    fixed = []
    for part in rest.split("/"):
        if glob.has_magic(part):
            break
        fixed.append(part)
    base = f"{head}://{'/'.join(fixed)}"
    base_p = remote.url_fs(base)[1].rstrip("/")
    out = []
    for h in sorted(hits):
        url = remote.join(base, h[len(base_p):].lstrip("/"))
        if h.lower().endswith(".ts"):
            continue
        out += _one_url(url, base) if hits[h].get("type") == "directory" \
            else [_url_file(url, base)]
    return out


def read_manifest(path: str | os.PathLike) -> list[str]:
    """One path per line (``#`` comments, blanks skipped), or a CSV whose header has ``path``.
    ``path`` may be a URL."""
    if is_url(path):
        m = remote.url_path(path)
        try:
            text = remote.read_bytes(path).decode()
        except FileNotFoundError:
            raise InputError(f"manifest {path}: no such file") from None
    else:
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


def _manifest_urls(manifest: str, entries: list[str]) -> list[Source]:
    """Entries of a manifest read by URL: relative ones resolve against its URL folder (outputs
    relative to it); absolute local paths stay local."""
    mdir = remote.parent(manifest)
    out = []
    for s in entries:
        if not is_url(s) and Path(s).expanduser().is_absolute():
            p = Path(s).expanduser()
            out.append(Source(str(p), _rel_stem(p, None),
                              "hls" if p.suffix.lower() == ".m3u8" else "audio"))
        else:
            out += _url_entry(s if is_url(s) else remote.join(mdir, s), mdir)
    return out


def expand(inputs: list[str], manifest: str | None = None) -> list[Source]:
    """Sources in a stable order; a name that matches nothing, or two inputs that would write the
    same output, fail up front naming them."""
    out: list[Source] = []
    for s in inputs:
        if is_url(s):
            out += _glob_url(s) if glob.has_magic(remote.url_path(s).as_posix()) else _one_url(s)
        elif glob.has_magic(s):
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
        entries = read_manifest(manifest)
        if is_url(manifest):
            out += _manifest_urls(manifest, entries)
            entries = []
        else:
            mdir = Path(manifest).resolve().parent
        for s in entries:
            if is_url(s):
                out += _url_entry(s, None)
                continue
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
