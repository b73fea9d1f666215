import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_manifest_is_complete():
    files = sorted((ROOT / "weights").glob("*.json"))
    names = {p.stem for p in files}
    assert {"pyannote-segmentation-3.0", "chatterbox-s3gen", "orcahello-srkw-detector-v1",
            "openai-whisper", "faster-whisper-ctranslate2"} <= names
    for p in files:
        m = json.loads(p.read_text())
        for key in ("name", "port", "licence", "gated", "converter", "original"):
            assert key in m, f"{p.name}: no {key}"
        assert isinstance(m["original"], str) and m["original"].strip(), f"{p.name}: empty original"
        assert m["converter"].startswith(f"ports.{m['port']}.")
    seg = json.loads((ROOT / "weights/pyannote-segmentation-3.0.json").read_text())
    assert seg["gated"] is True and "pytorch_model.bin" in seg["files"]
