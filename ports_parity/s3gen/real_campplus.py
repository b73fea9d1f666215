"""The s3gen x-vector path (CAMPPlus) with real weights: the 3D-Speaker CAM++ checkpoint that
``ports_parity.real_weights`` fetches fills chatterbox's ``CAMPPlus`` exactly (937 keys). The port
and chatterbox hold the same tensors; inputs are espeak-ng voices."""
from __future__ import annotations

from itertools import combinations

import numpy as np

SR = 16000
# (voice, speed, pitch): distinct synthetic speakers
VOICES = {"us-m3": ("en-us+m3", 150, 40), "us-f3": ("en-us+f3", 165, 65),
          "gb-m7": ("en-gb+m7", 135, 20), "us-f2": ("en-us+f2", 175, 80)}
TEXTS = ("The quick brown fox jumps over the lazy dog near the river bank.",
         "Please call Stella and ask her to bring these things with her from the store.")


def load_pair():
    """(chatterbox CAMPPlus, port CAMPPlus) holding the real CAM++ weights, both strictly."""
    import torch
    from chatterbox.models.s3gen.xvector import CAMPPlus as TorchCAMPPlus

    from ports.common.convert import load_state_dict
    from ports.s3gen import campplus as C
    from ports_parity.real_weights import campplus_3dspeaker

    sd = load_state_dict(campplus_3dspeaker())
    ref = TorchCAMPPlus(memory_efficient=False)
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    ref.eval()
    port = C.CAMPPlus()
    C.load_campplus_state_dict(port, {"speaker_encoder." + k: v for k, v in sd.items()})
    return ref, port, len(sd)


def utterances() -> dict[tuple[str, int], np.ndarray]:
    """(voice, text index) -> 16 kHz float32 speech."""
    from ports.common.samples import espeak

    return {(name, i): espeak(t, voice=v, sr=SR, speed=s, pitch=p)
            for name, (v, s, p) in VOICES.items() for i, t in enumerate(TEXTS)}


def xvectors(ref, port, utts) -> tuple[dict, dict]:
    import torch

    ours, theirs = {}, {}
    for k, w in utts.items():
        with torch.no_grad():
            theirs[k] = ref.inference(torch.from_numpy(w)[None]).numpy()[0]
        ours[k] = np.array(port.inference(w, SR))[0]
    return ours, theirs


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def same_vs_different(vecs: dict) -> dict:
    """Mean and extreme cosines between x-vectors of the same voice (different sentences) and of
    different voices: the sanity figure of the weights."""
    same, diff = [], []
    for a, b in combinations(sorted(vecs), 2):
        (same if a[0] == b[0] else diff).append(cosine(vecs[a], vecs[b]))
    return {"same_mean": float(np.mean(same)), "same_min": float(np.min(same)),
            "different_mean": float(np.mean(diff)), "different_max": float(np.max(diff)),
            "pairs_same": len(same), "pairs_different": len(diff)}


def run(report=None):
    """Port vs chatterbox x-vector cosine per utterance (>= 0.99999), plus the same/different-voice
    figure of both; returns the report (``report.info["campplus_real"]`` holds the numbers)."""
    from ports_parity.common.parity import ParityReport
    from ports_parity.real_weights import campplus_3dspeaker, describe

    rep = report or ParityReport("s3gen", campplus=describe(campplus_3dspeaker()))
    ref, port, n_keys = load_pair()
    rep.check("CAM++ real checkpoint: keys", n_keys == 937, f"{n_keys} tensors", keys=n_keys)
    ours, theirs = xvectors(ref, port, utterances())
    for k in sorted(ours):
        rep.compare(f"x-vector real CAM++ {k[0]} #{k[1]}", ours[k], theirs[k], cosine_min=0.99999)
    figs = {"port": same_vs_different(ours), "chatterbox": same_vs_different(theirs)}
    f = figs["port"]
    rep.check("real CAM++: same-voice cosine > different-voice cosine (mean)",
              f["same_mean"] > f["different_mean"],
              f"same {f['same_mean']:.3f} (min {f['same_min']:.3f}), different "
              f"{f['different_mean']:.3f} (max {f['different_max']:.3f})")
    rep.info["campplus_real"] = {"cosines_port_vs_chatterbox": {
        f"{k[0]}#{k[1]}": cosine(ours[k], theirs[k]) for k in sorted(ours)}, **figs}
    return rep
