"""orca_v1 speed: port (in memory, batched) vs a per-window loop shaped like the original
(pydub loads the file and writes each 2-s clip to a WAV file that is reloaded, down-mix and resample through 16-bit WAV files,
torchaudio transforms, model one clip at a time), in the same run. Reports real-time factors.

Quick: 20 s of 48 kHz stereo. Full: adds 2 minutes (both sides) and 1 hour (port only; the loop
would take hours here) — the ratio is taken on the 2-minute case.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def make_audio(path: Path, seconds: float, sr: int = 48000, seed: int = 0) -> Path:
    """Hydrophone-like 16-bit stereo WAV, written in one-minute blocks (bounded memory)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as fh:
        for start in range(0, n, 60 * sr):
            m = min(60 * sr, n - start)
            t = (start + np.arange(m)) / sr
            x = 0.02 * rng.standard_normal(m)
            x += 0.01 * np.sin(2 * np.pi * 55 * t)
            for c in rng.uniform(t[0], t[-1], 3):
                w = (t > c) & (t < c + 1.0)
                x[w] += 0.2 * np.sin(2 * np.pi * (800 + 400 * (t[w] - c)) * t[w])
            fh.write(np.stack([x, 0.6 * x + 0.005 * rng.standard_normal(m)], 1).astype(np.float32))
    return path


class ReferenceLoop:
    """The original's shape, without fastai: per window, files in and out, batch 1."""

    def __init__(self, model):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchaudio.transforms import AmplitudeToDB, MelSpectrogram

            self.ms = MelSpectrogram(f_min=0.0, f_max=10000, hop_length=256, n_fft=2560,
                                     n_mels=256, pad=0, win_length=None)
        self.adb = AmplitudeToDB(top_db=100)
        self.model = model

    def mels(self, path) -> np.ndarray:
        import soundfile as sf
        import torch
        from scipy.signal import resample_poly

        from ports.orca_v1.frontend import stage_c_pad, window_bounds

        from pydub import AudioSegment  # the original's Stage A tool (pydub 0.24.1)

        info = sf.info(str(path))
        audio = AudioSegment.from_wav(str(path))  # whole file in memory, as production does
        out = []
        with tempfile.TemporaryDirectory() as d:
            for b, e, _, _ in window_bounds(info.frames, info.samplerate):
                clip = Path(d) / f"c_{b}_{e}.wav"
                audio[b * 1000:e * 1000].export(clip, format="wav")
                data, sr = sf.read(clip, dtype="float32")
                sig = torch.from_numpy(data.T if data.ndim > 1 else data.reshape(1, -1))
                sf.write(Path(d) / "dm.wav", torch.mean(sig, 0, True).numpy().T, sr)
                data, sr = sf.read(Path(d) / "dm.wav", dtype="float32")
                x = data.reshape(1, -1)
                if sr != 20000:
                    g = np.gcd(sr, 20000)
                    x = resample_poly(x, 20000 // g, sr // g, axis=-1)
                sf.write(Path(d) / "rs.wav", x.T, 20000)
                data, _ = sf.read(Path(d) / "rs.wav", dtype="float32")
                with torch.no_grad():
                    m = self.adb(self.ms(torch.from_numpy(data.reshape(1, -1))))
                out.append(stage_c_pad(m.numpy())[0])
        return np.stack(out) if out else np.zeros((0, 256, 312), np.float32)

    def scores(self, mels: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for m in mels:
                logits = self.model(torch.from_numpy(m)[None, None])
                out.append(float(torch.softmax(logits, 1)[0, 1]))
        return np.array(out)


def run(quick: bool = False, threads: int | None = None):
    import copy

    import torch

    from ports_parity.common.bench import Case, run_cases
    from ports.common.hub import cache_dir

    from ports.orca_v1.frontend import file_features
    from ports.orca_v1.model import OrcaResNet50, random_init_
    from ports.orca_v1.pipeline import OrcaDetector

    if threads:
        torch.set_num_threads(threads)
    model = random_init_(OrcaResNet50(), seed=0).eval()
    det = OrcaDetector(copy.deepcopy(model))
    det_plain = OrcaDetector(copy.deepcopy(model), fold_bn=False)  # the scoring path before
    ref = ReferenceLoop(model)
    d = cache_dir("orca_v1") / "bench"
    d.mkdir(parents=True, exist_ok=True)

    def audio(sec):
        p = d / f"synthetic_48k_stereo_{int(sec)}s.wav"
        return p if p.exists() else make_audio(p, sec)

    cases, checks = [], {}
    lengths = [20.0] if quick else [20.0, 120.0]
    for sec in lengths:
        p = audio(sec)
        feats = file_features(p)
        ref_mels = ref.mels(p)
        checks[f"{sec:.0f}s mels max|port-loop|"] = float(np.abs(feats.mels - ref_mels).max())
        s_port, s_ref = det.scores(feats.mels), ref.scores(ref_mels)
        checks[f"{sec:.0f}s scores max|port-loop|"] = float(np.abs(s_port - s_ref).max())
        meta = {"audio_s": sec, "windows": len(feats.mels)}
        rep = 3 if sec <= 20 else 1
        cases += [
            Case(f"frontend {sec:.0f}s", lambda p=p: file_features(p), lambda p=p: ref.mels(p),
                 repeats=rep, warmup=0, meta=meta),
            Case(f"model {sec:.0f}s", lambda m=feats.mels: det.scores(m),
                 lambda m=feats.mels: ref.scores(m), repeats=1, warmup=0, meta=meta),
            Case(f"model, BN not folded {sec:.0f}s", lambda m=feats.mels: det_plain.scores(m),
                 repeats=1, warmup=0, meta=meta),
            Case(f"end-to-end {sec:.0f}s", lambda p=p: det.detect_file(p),
                 lambda p=p: ref.scores(ref.mels(p)), repeats=1, warmup=0, meta=meta),
        ]
    if not quick:
        p = audio(3600.0)
        cases.append(Case("end-to-end 1h (port only)", lambda p=p: det.detect_file(p),
                          repeats=1, warmup=0, meta={"audio_s": 3600.0}))
    report = run_cases("orca_v1", cases)  # rows carry audio_s, so rtf / original_rtf
    report.machine["parity_checks"] = checks
    report.machine["torch_threads"] = torch.get_num_threads()
    return report
