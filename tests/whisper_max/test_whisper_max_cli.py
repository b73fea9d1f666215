"""`ports transcribe` and `ports convert whisper_max` through the real CLI entry point."""
import json

import numpy as np

from ports.cli import main
from ports.common.audio import write_audio
from ports.common.samples import espeak
from ports_parity.real_weights import whisper_tiny_en


def test_transcribe_cli_writes_srt_and_json(tmp_path, capsys):
    wav = espeak("The quick brown fox jumps over the lazy dog.")
    audio = write_audio(tmp_path / "fox.wav", wav, 16000)
    out = tmp_path / "out"
    assert main(["transcribe", str(audio), "--model", str(whisper_tiny_en()), "--output-format", "all",
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dog" in printed
    srt = (out / "fox.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and "dog" in srt
    assert (out / "fox.vtt").read_text().startswith("WEBVTT")
    res = json.loads((out / "fox.json").read_text())
    assert res["language"] == "en" and res["segments"] and "dog" in res["text"]
    assert "dog" in (out / "fox.txt").read_text()


def test_transcribe_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    (tmp_path / "empty.wav").write_bytes(b"RIFF")
    assert main(["transcribe", str(tmp_path / "empty.wav")]) == 2
    assert "empty.wav" in capsys.readouterr().err
    ok = write_audio(tmp_path / "x.wav", espeak("Hello."), 16000)
    assert main(["transcribe", str(ok), "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_convert_cli_then_load_converted(tmp_path):
    from ports.whisper_max.pipeline import WhisperMax

    dst = tmp_path / "tiny_en.safetensors"
    assert main(["convert", "whisper_max", str(whisper_tiny_en()), str(dst)]) == 0
    a = WhisperMax.from_pretrained(dst)
    b = WhisperMax.from_pretrained(whisper_tiny_en())
    mel = np.random.default_rng(0).uniform(-1, 1, (80, 3000)).astype(np.float32)
    np.testing.assert_array_equal(a.embed_audio(mel), b.embed_audio(mel))
