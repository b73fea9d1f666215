"""Generated speech for tests and the demo (espeak-ng), so nothing has to be downloaded."""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from .audio import resample
from .errors import UserError

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "We measured every stage against the original model.",
    "Killer whales call to each other across the sound.",
    "Please read the numbers back to me slowly.",
    "The meeting starts at nine in the morning, not at ten.",
    "A faithful port reproduces what the original computes.",
    "Could you send me the recording from yesterday?",
    "The weather in Seattle was grey and calm all week.",
    "Speaker diarization answers the question of who spoke when.",
    "Every benchmark reports a ratio against the original.",
]
VOICES = ("en-us+m3", "en-us+f3", "en-gb+m7")
# (speed, pitch) per voice: distinct enough for a speaker model to tell apart
STYLES = ((150, 40), (165, 65), (135, 20))


class EspeakMissing(UserError, RuntimeError):
    """espeak-ng, which renders the generated speech, is not installed."""


def espeak(text: str, *, voice: str = "en-us", sr: int = 16000, speed: int = 160,
           pitch: int = 50) -> np.ndarray:
    """float32 mono speech at ``sr`` (espeak-ng renders 22050 Hz; resampled polyphase)."""
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise EspeakMissing("espeak-ng is not installed (apt-get install espeak-ng); "
                            "scripts/setup_env.sh installs it")
    wav = subprocess.run([exe, "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text],
                         check=True, capture_output=True).stdout
    import soundfile as sf

    x, native = sf.read(io.BytesIO(wav), dtype="float32")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return resample(x, native, sr)


@dataclass
class Turn:
    start: float
    end: float
    speaker: str


def conversation(seconds: float = 60.0, *, sr: int = 16000, seed: int = 0,
                 noise_db: float = -45.0, speakers: int = 2) -> tuple[np.ndarray, list[Turn]]:
    """Two (or three: ``speakers``) voices taking turns, sometimes overlapping, with pauses and
    background noise.

    Returns the waveform (exactly ``seconds`` long) and the reference turns.
    """
    if not 1 <= speakers <= len(VOICES):
        raise ValueError(f"speakers must be 1..{len(VOICES)}, got {speakers}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, np.float32)
    turns: list[Turn] = []
    t = 0.5
    i = 0
    while t < seconds - 1.0:
        spk = i % speakers
        speed, pitch = STYLES[spk]
        x = 0.5 * espeak(SENTENCES[i % len(SENTENCES)], voice=VOICES[spk], sr=sr,
                         speed=speed, pitch=pitch)
        a = int(t * sr)
        b = min(n, a + x.size)
        out[a:b] += x[: b - a]
        turns.append(Turn(a / sr, b / sr, f"spk{spk}"))
        dur = x.size / sr
        r = rng.random()
        if r < 0.25:    # overlap: next turn starts before this one ends
            t += dur * rng.uniform(0.6, 0.85)
        elif r < 0.45:  # long silence
            t += dur + rng.uniform(1.5, 3.0)
        else:
            t += dur + rng.uniform(0.2, 0.7)
        i += 1
    out += (10 ** (noise_db / 20) * rng.standard_normal(n)).astype(np.float32)
    return np.clip(out, -1, 1), turns
