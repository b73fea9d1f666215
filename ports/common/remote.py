"""fsspec URLs (``s3://``, ``gs://``, ``https://``, ``file://``, ``memory://`` ...) as inputs.

A URL stays a string everywhere (work rows, Ray actors) and is opened where it is read. fsspec is
imported on first use only. A protocol whose backend is not installed, or that fsspec does not
know, is a ``UserError`` naming what to install; a missing object is a ``FileNotFoundError``.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import PurePosixPath

from .errors import UserError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# Range reads ("readahead" cache: each miss fetches what is asked plus one block), so a header
# probe or a one-minute slice does not download the whole object. Measured over HTTP on a
# 115-MB 48-kHz stereo WAV: info 0.07 MB in 1 GET; one minute (11.5 MB) 12.7 MB in 13 GETs
# (4-MB blocks: 17 MB, the header read alone fetching a whole block).
INFO_BLOCK = 1 << 16
READ_BLOCK = 1 << 20


def is_url(path) -> bool:
    return isinstance(path, str) and bool(_URL.match(path))


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def url_fs(url: str):
    """``(filesystem, path inside it)``; ``UserError`` for an unknown or uninstalled protocol."""
    try:
        import fsspec.core
    except ImportError:
        raise UserError(f"{url}: URLs need fsspec: pip install fsspec") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        pkg = _missing_package(url, err)
        raise UserError(f"{url}: {protocol(url)}:// needs {pkg} (on every machine that reads "
                        f"it): pip install {pkg}") from None
    except ValueError as err:
        if "Protocol not known" in str(err):
            raise UserError(f"{url}: unknown protocol {protocol(url)}:// (not an fsspec "
                            "protocol)") from None
        raise


def _missing_package(url: str, err: ImportError) -> str:
    """The pip name: the backend's own package (s3fs, gcsfs ...), or for fsspec's built-in
    backends (http) the module their import missed (aiohttp)."""
    from fsspec.registry import known_implementations

    cls = known_implementations.get(protocol(url), {}).get("class", "")
    top = cls.split(".", 1)[0]
    if top and top != "fsspec":
        return top
    cause = err.__cause__ or err.__context__
    return getattr(cause, "name", None) or getattr(err, "name", None) or top or "fsspec"


def _on_fs(url: str, what: str, call):
    """``call(filesystem, path)``, a missing object as a ``FileNotFoundError`` naming the URL."""
    fs, p = url_fs(url)
    try:
        return call(fs, p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such {what}") from None


def stat(url: str) -> dict:
    """fsspec's ``info`` (``type``, ``size`` ...); ``FileNotFoundError`` naming the URL."""
    return _on_fs(url, "file or folder", lambda fs, p: fs.info(p))


def open_url(url: str, block_size: int = READ_BLOCK):
    return _on_fs(url, "file", lambda fs, p: fs.open(p, "rb", block_size=block_size,
                                                     cache_type="readahead"))


def read_bytes(url: str) -> bytes:
    return _on_fs(url, "file", lambda fs, p: fs.cat_file(p))


def url_path(url: str) -> PurePosixPath:
    """The URL's path for names and suffixes (``s3://b/k/a.wav`` -> ``b/k/a.wav``)."""
    rest = url.split("://", 1)[1]
    if protocol(url) in ("http", "https"):
        rest = rest.split("?", 1)[0].split("#", 1)[0]
    return PurePosixPath(rest)


def join(base: str, rel: str) -> str:
    """``rel`` (POSIX, may hold ``..``) below the URL folder ``base``, in the user's spelling."""
    head, _, rest = base.partition("://")
    lead = "/" if rest.startswith("/") else ""
    joined = posixpath.normpath(posixpath.join("/" + rest.strip("/"), rel)).lstrip("/")
    return f"{head}://{lead}{joined}"


def parent(url: str) -> str:
    head, _, rest = url.partition("://")
    return f"{head}://{posixpath.dirname(rest.rstrip('/'))}"


__all__ = ["is_url", "protocol", "url_fs", "stat", "open_url", "read_bytes", "url_path", "join",
           "parent", "INFO_BLOCK", "READ_BLOCK"]
