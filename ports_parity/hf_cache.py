"""A Hugging Face hub cache layout built locally, so hub code is exercised offline.

``models--owner--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
refs/<ref>}``, exactly what ``huggingface_hub`` writes and reads.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_repo(cache: str | os.PathLike, repo: str, files: dict[str, bytes | str | os.PathLike], *,
             commit: str = "c" * 40, ref: str = "main") -> Path:
    """Put ``files`` (name -> bytes or a local file) into ``cache`` as ``repo`` at ``commit``
    (pointed to by ``ref``); returns the snapshot folder."""
    base = Path(cache) / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    for d in (base / "blobs", base / "refs", snap):
        d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not isinstance(data, bytes):
            data = Path(data).read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (base / "refs" / ref).write_text(commit)
    return snap


def use_offline(cache: str | os.PathLike, monkeypatch) -> None:
    """Point huggingface_hub at ``cache`` with no network (``monkeypatch``: pytest's)."""
    import huggingface_hub.constants as k

    monkeypatch.setattr(k, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(k, "HF_HUB_OFFLINE", True)
