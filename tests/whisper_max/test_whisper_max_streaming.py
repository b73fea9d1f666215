"""Window-by-window log-mel (``streaming.LazyLogMel``) against openai-whisper's own
``log_mel_spectrogram`` of the whole recording, and its memory on an hour of audio."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ports.common.samples import espeak
from ports.whisper_max.streaming import N_SAMPLES, LazyLogMel


@pytest.mark.parametrize("kind", ["speech_50s", "short_3s", "150_samples"])
def test_windows_equal_openai_full_log_mel(kind):
    import whisper

    if kind == "speech_50s":
        wav = np.concatenate([espeak("Machine learning models run on many different devices."),
                              np.zeros(16000 * 3, np.float32)] * 8)
    elif kind == "short_3s":
        wav = espeak("The quick brown fox jumps over the lazy dog.")
    else:
        wav = (0.1 * np.random.default_rng(0).standard_normal(150)).astype(np.float32)
    full = whisper.log_mel_spectrogram(torch.from_numpy(wav), 80, padding=N_SAMPLES)
    lazy = LazyLogMel(wav, 80)
    assert lazy.shape == tuple(full.shape)
    # bit-identical: the same STFT frames, the same global maximum
    assert torch.equal(torch.cat([lazy[:, a:a + 2345] for a in range(0, lazy.shape[1], 2345)],
                                 dim=1), full)
    assert torch.equal(whisper.audio.pad_or_trim(lazy, 3000).to("cpu"),
                       whisper.audio.pad_or_trim(full, 3000))
    with pytest.raises(TypeError):
        lazy[:, ::2]


HOUR = """
import resource, numpy as np, torch, whisper.audio
from ports.whisper_max.streaming import LazyLogMel
x = np.random.default_rng(0).standard_normal(3600 * 16000, dtype=np.float32)  # no float64 copy
LazyLogMel(np.zeros(16000, np.float32), 80)[:, 0:3000]  # torch's own first-use allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
mel = LazyLogMel(x, 80)
for a in range(0, mel.shape[1], 3000):
    w = mel[:, a:a + 3000]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(after - before)
"""


def test_hour_of_audio_in_bounded_memory():
    """An hour: the peak grows by a window's buffers, not by openai's whole-recording STFT
    (~0.6 GB complex + 0.3 GB magnitudes + 0.1 GB mel)."""
    out = subprocess.run([sys.executable, "-c", HOUR], capture_output=True, text=True,
                         check=True).stdout
    grown_mb = json.loads(out.strip().splitlines()[-1])
    assert grown_mb < 64, grown_mb  # measured 16 MB; openai's whole log-mel: +1183 MB
