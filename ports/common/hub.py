"""Model sources: a local file or folder, or a Hugging Face Hub repo id; converted-weight cache.

Hub access goes through ``huggingface_hub``, so its cache (``HF_HOME``/``HF_HUB_CACHE``),
offline mode (``HF_HUB_OFFLINE=1``) and token (``HF_TOKEN`` or ``token=``, needed for gated repos
such as ``pyannote/segmentation-3.0``) apply unchanged.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Sequence

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSourceError(FileNotFoundError):
    """A model source could not be resolved (message says what was tried and how to fix it)."""


def is_repo_id(source: str | os.PathLike) -> bool:
    s = str(source)
    return not Path(s).exists() and bool(_REPO_ID.match(s))


def _hub_error(source: str, what: str, err: Exception) -> ModelSourceError:
    hint = ""
    name = type(err).__name__
    if "Gated" in name or "401" in str(err) or "403" in str(err):
        hint = (" The repo is gated: accept its conditions on huggingface.co and pass token=... "
                "or set HF_TOKEN.")
    elif "Offline" in name or "LocalEntryNotFound" in name or "connect" in str(err).lower():
        hint = (" No network or HF_HUB_OFFLINE=1 and not in the local cache: download it once "
                "with network access, or pass a local path.")
    return ModelSourceError(f"could not get {what} from Hugging Face repo {source!r}: "
                            f"{name}: {str(err).rstrip('.')}.{hint}")


def resolve_file(source: str | os.PathLike, filename: str | None = None, *,
                 revision: str | None = None, token: str | bool | None = None,
                 repo_type: str = "model") -> Path:
    """Path of ``filename`` from ``source``: a file (returned as is), a folder, or a repo id."""
    p = Path(source).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if filename is None:
            raise ModelSourceError(f"{p} is a folder: name the file to load in it")
        f = p / filename
        if not f.is_file():
            raise ModelSourceError(f"{f} not found (folder {p} has: "
                                   f"{', '.join(sorted(x.name for x in p.iterdir())) or 'nothing'})")
        return f
    if not is_repo_id(str(source)):
        raise ModelSourceError(f"model source {str(source)!r} is neither an existing file or "
                               "folder nor a Hugging Face repo id (owner/name)")
    if filename is None:
        raise ModelSourceError(f"repo {source!r}: name the file to load from it")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(str(source), filename, revision=revision, token=token,
                                    repo_type=repo_type))
    except Exception as err:  # noqa: BLE001 - re-raised with the source named
        raise _hub_error(str(source), filename, err) from err


def resolve_dir(source: str | os.PathLike, *, allow_patterns: Sequence[str] | None = None,
                revision: str | None = None, token: str | bool | None = None) -> Path:
    """A local folder, or the snapshot folder of a repo id (only ``allow_patterns`` files)."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise ModelSourceError(f"{p} is a file; a model folder was expected")
    if not is_repo_id(str(source)):
        raise ModelSourceError(f"model source {str(source)!r} is neither an existing folder nor a "
                               "Hugging Face repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), revision=revision, token=token,
                                      allow_patterns=list(allow_patterns) if allow_patterns else None))
    except Exception as err:  # noqa: BLE001
        raise _hub_error(str(source), "a snapshot", err) from err


def cache_dir(port: str) -> Path:
    root = os.environ.get("AUDIO_PORTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "audio-ports")
    d = Path(root) / port
    d.mkdir(parents=True, exist_ok=True)
    return d


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file; an HF-cache blob is named by its sha256 already, so that is reused."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_conversion(src: str | os.PathLike, port: str, tag: str,
                      convert: Callable[[Path, Path], None], *, suffix: str = ".safetensors") -> Path:
    """Run ``convert(src, out)`` once per (content of ``src``, ``tag``); return the cached output.

    ``tag`` names the converter and its version: change it when the conversion changes.
    The output is written to a temporary file and renamed, so a crash never leaves half a file.
    """
    src = Path(src)
    out = cache_dir(port) / f"{tag}-{file_sha256(src)[:20]}{suffix}"
    if out.exists():
        return out
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        convert(src, Path(tmp))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
