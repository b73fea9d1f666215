"""HLS input (Orcasound archives): a ``.m3u8`` playlist of ``.ts`` AAC segments, or a folder
holding one (``<stream start unix time>/live.m3u8`` + ``liveNNN.ts``).

Minutes are cut the way the OrcaHello live system cuts them (``hls_utils/HLSStream.py``):
``ceil(60 / target_duration)`` consecutive segments in playlist order, their bytes concatenated
(``cat``) and decoded by ffmpeg to a WAV (ffmpeg's default ``pcm_s16le`` at the stream's own rate
and channel count). Here the decoder writes raw ``s16le`` to a pipe, read back as
``int16 / 32768`` float32, which is what soundfile returns for that WAV.

A minute's offset is the sum of the ``#EXTINF`` durations before its first segment. A folder
named by a unix time gives absolute timestamps (``stream_start_unix``). Missing or undecodable
segments are left out of their minute and reported in its note; a minute with no usable segment
is an error, and so is a playlist without segments.

A playlist or folder may be an fsspec URL (``ports.common.remote``): relative segment URIs resolve
against the playlist's URL, and each segment is copied to a temporary file for ffmpeg.
"""
from __future__ import annotations

import math
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from . import remote
from .audio import AudioNotFoundError, CorruptAudioError, EmptyAudioError, UnsupportedAudioError
from .errors import ToolMissing, UserError
from .remote import is_url

PLAYLIST_NAMES = ("live.m3u8",)  # preferred when a folder holds several playlists


class HLSError(CorruptAudioError):
    pass


@dataclass(frozen=True)
class Segment:
    index: int
    uri: str
    path: str          # local path, or fsspec URL (absolute URIs, playlists read by URL)
    duration_s: float  # #EXTINF
    offset_s: float    # sum of the #EXTINF before it


@dataclass
class Playlist:
    path: str                      # the .m3u8 file
    source: str                    # what the user named (playlist or folder)
    target_duration: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return float(sum(s.duration_s for s in self.segments))

    def minutes(self, minute_s: float = 60.0) -> list[list[Segment]]:
        """The live system's minutes: ``ceil(minute_s / target_duration)`` segments each."""
        n = max(1, math.ceil(minute_s / self.target_duration)) if self.target_duration > 0 else 1
        return [self.segments[i:i + n] for i in range(0, len(self.segments), n)]


def _url_playlists(url: str) -> list[str] | None:
    """The ``*.m3u8`` directly in URL folder ``url`` (None: not a folder)."""
    try:
        if remote.stat(url).get("type") != "directory":
            return None
    except FileNotFoundError:
        return None
    fs, p = remote.url_fs(url)
    return sorted(remote.join(url, posixpath.basename(f))
                  for f in fs.glob(p.rstrip("/") + "/*.m3u8"))


def is_hls(path: str | os.PathLike) -> bool:
    if is_url(path):
        return remote.url_path(path).suffix.lower() == ".m3u8" or bool(_url_playlists(path))
    p = Path(path)
    if p.suffix.lower() == ".m3u8":
        return True
    return p.is_dir() and any(p.glob("*.m3u8"))


def find_playlist(path: str | os.PathLike) -> Path | str:
    """The playlist file (a URL stays a string)."""
    if is_url(path):
        if remote.url_path(path).suffix.lower() == ".m3u8":
            return path
        found = _url_playlists(path)
        if found is None:
            raise AudioNotFoundError(f"{path}: no such playlist or folder")
        if not found:
            raise AudioNotFoundError(f"{path}: no .m3u8 playlist in this folder")
        named = [f for f in found if posixpath.basename(f) in PLAYLIST_NAMES]
        return named[0] if named else found[0]
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.m3u8"))
        if not found:
            raise AudioNotFoundError(f"{p}: no .m3u8 playlist in this folder")
        named = [f for f in found if f.name in PLAYLIST_NAMES]
        return named[0] if named else found[0]
    if not p.exists():
        raise AudioNotFoundError(f"{p}: no such playlist")
    return p


def stream_start_unix(path: str | os.PathLike) -> int | None:
    """The stream start when the HLS folder is named by a unix time (Orcasound layout)."""
    if is_url(path):
        p = remote.url_path(path)  # the bucket/key path: its folder names the stream
    else:
        p = Path(path)
    folder = p.parent if p.suffix.lower() == ".m3u8" else p
    name = folder.name
    # 9-11 digits: 1973..5138, avoids taking "live001" style or short numeric names for times
    return int(name) if re.fullmatch(r"\d{9,11}", name) else None


def iso_utc(unix_s: float) -> str:
    """``datetime.isoformat() + "Z"`` as the live system writes ``clip_start_time``."""
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def parse_playlist(path: str | os.PathLike) -> Playlist:
    pl_path = find_playlist(path)
    try:
        if is_url(pl_path):
            text = remote.read_bytes(pl_path).decode(errors="replace")
            base = remote.parent(pl_path)
        else:
            text = pl_path.read_text(errors="replace")
    except FileNotFoundError:
        raise AudioNotFoundError(f"{pl_path}: no such playlist") from None
    except OSError as err:
        raise HLSError(f"{pl_path}: cannot read playlist ({err})") from None
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise UnsupportedAudioError(f"{pl_path}: not an HLS playlist (no #EXTM3U header)")
    target, segs, dur, off = 0.0, [], None, 0.0
    for ln in lines[1:]:
        if ln.startswith("#EXT-X-TARGETDURATION:"):
            target = float(ln.split(":", 1)[1])
        elif ln.startswith("#EXTINF:"):
            dur = float(ln.split(":", 1)[1].split(",", 1)[0])
        elif ln.startswith("#EXT-X-STREAM-INF"):
            raise UnsupportedAudioError(f"{pl_path}: master playlists are not supported; "
                                        "pass the media playlist")
        elif ln and not ln.startswith("#"):
            if dur is None:
                raise HLSError(f"{pl_path}: segment {ln} has no #EXTINF duration")
            if "://" in ln:
                where = ln
            elif is_url(pl_path):
                where = remote.join(base, ln)
            else:
                where = str(pl_path.parent / ln)
            segs.append(Segment(len(segs), ln, where, dur, off))
            off += dur
            dur = None
    if target <= 0:
        target = max((s.duration_s for s in segs), default=0.0)
    return Playlist(str(pl_path), str(path), target, segs)


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise ToolMissing("HLS input needs ffmpeg on PATH (Debian: apt-get install ffmpeg)")
    return exe


def _local_copy(seg: Segment, tmp: str) -> tuple[str, str | None]:
    """(local path, None), or ("", why not): a URL segment is copied into ``tmp`` because ffmpeg
    and ffprobe read files."""
    if not is_url(seg.path):
        return seg.path, None
    try:
        data = remote.read_bytes(seg.path)
    except FileNotFoundError:
        return "", f"{seg.uri}: missing"
    except (OSError, UserError) as err:
        return "", f"{seg.uri}: cannot read ({err})"
    local = os.path.join(tmp, f"{seg.index:06d}.ts")
    with open(local, "wb") as fh:
        fh.write(data)
    return local, None


def _check_segment(seg: Segment, path: str) -> str | None:
    """None when the segment (at local ``path``) decodes cleanly, else why not."""
    p = Path(path)
    if not p.is_file():
        return f"{seg.uri}: missing"
    if p.stat().st_size == 0:
        return f"{seg.uri}: empty file"
    r = subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-xerror", "-i", str(p),
                        "-vn", "-f", "null", "-"], capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        return f"{seg.uri}: corrupt ({err})"
    return None


def _probe(path: str) -> tuple[int, int]:
    exe = shutil.which("ffprobe")
    if exe is None:
        raise ToolMissing("HLS input needs ffprobe on PATH (Debian: apt-get install ffmpeg)")
    r = subprocess.run([exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                        "stream=sample_rate,channels", "-of", "csv=p=0", path],
                       capture_output=True, text=True)
    try:
        sr, ch = (int(v) for v in r.stdout.strip().splitlines()[0].split(",")[:2])
    except (ValueError, IndexError):
        raise HLSError(f"{path}: no audio stream ({r.stderr.strip() or 'ffprobe found none'})")
    return sr, ch


def decode_segments(segs: list[Segment]) -> tuple[np.ndarray | None, int, list[str]]:
    """Concatenate the usable segments' bytes and decode: ((n, C) float32, rate, problems);
    (None, 0, problems) when no segment is usable."""
    problems, good, paths = [], [], []
    with tempfile.TemporaryDirectory(prefix="ports-hls-") as tmp:
        for s in segs:
            local, why = _local_copy(s, tmp)
            why = why or _check_segment(s, local)
            if why:
                problems.append(why)
            else:
                good.append(s)
                paths.append(local)
        if not good:
            return None, 0, problems
        sr, ch = _probe(paths[0])
        data = b"".join(Path(p).read_bytes() for p in paths)
    r = subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-f", "mpegts", "-i", "pipe:0",
                        "-vn", "-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(sr),
                        "-ac", str(ch), "pipe:1"], input=data, capture_output=True)
    if r.returncode != 0 or not r.stdout:
        err = r.stderr.decode(errors="replace").strip()
        raise HLSError(f"{good[0].uri}..{good[-1].uri}: ffmpeg could not decode ({err})")
    q = np.frombuffer(r.stdout, np.int16)
    q = q[: q.size // ch * ch].reshape(-1, ch)
    return q.astype(np.float32) * np.float32(1.0 / 32768.0), sr, problems


@dataclass
class HLSMinute:
    index: int
    offset_s: float
    samples: np.ndarray | None   # (n, C) float32; None when no segment of it decodes
    samplerate: int
    note: str


def read_minute(playlist: Playlist, index: int, minute_s: float = 60.0) -> HLSMinute:
    groups = playlist.minutes(minute_s)
    if not groups:
        raise EmptyAudioError(f"{playlist.path}: playlist has no segments")
    segs = groups[index]
    x, sr, problems = decode_segments(segs)
    note = ("skipped segment(s): " + "; ".join(problems)) if problems else ""
    return HLSMinute(index, segs[0].offset_s, x, sr, note)


def iter_minutes(path: str | os.PathLike, minute_s: float = 60.0) -> Iterator[HLSMinute]:
    pl = parse_playlist(path)
    if not pl.segments:
        raise EmptyAudioError(f"{pl.path}: playlist has no segments")
    for i in range(len(pl.minutes(minute_s))):
        yield read_minute(pl, i, minute_s)


__all__ = ["HLSError", "Segment", "Playlist", "HLSMinute", "is_hls", "find_playlist",
           "parse_playlist", "stream_start_unix", "iso_utc", "decode_segments", "read_minute",
           "iter_minutes"]
