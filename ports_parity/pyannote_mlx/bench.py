"""MLX port vs pyannote.audio ``Inference`` (torch CPU) in one process, same weights.

Cases: one 10-s chunk (batch 1), 32 chunks (batch 32), a 64-s file and, unless ``quick``, a
1-hour file (3600 chunks), each through the full sliding-window inference. Peak RSS is the
process RSS (both frameworks are loaded); ``file 1h`` also records the port's RSS measured in a
separate process without torch (``port_only_peak_rss_mb``).

Peer cases ("... : MLX vs ONNX Runtime"): the second side is pyannote's own model exported to
ONNX from the same checkpoint (``onnx_peer``) and run by ONNX Runtime on the 32 chunks and, as the
model inside pyannote's ``Inference``, on the 64-s file; torch vs ORT is read across the rows.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from ports_parity.common.bench import BenchReport, Case, run_cases

from ports_parity.pyannote_mlx import parity

SR = 16000


def _port_only_rss(checkpoint: str, seconds: float) -> dict:
    """Run the port alone on a tiled conversation in a fresh process; its peak RSS and time."""
    code = f"""
import json, resource, time, numpy as np
from ports_parity.pyannote_mlx import parity
from ports.pyannote_mlx.pipeline import from_pretrained
inf = from_pretrained({checkpoint!r}, cache=False)
wav = parity.conversation_audio(64.3)
wav = np.resize(wav, int({seconds} * 16000))
t = time.perf_counter()
seg = inf(wav)
vad = seg.vad()
dt = time.perf_counter() - t
print(json.dumps({{"port_only_s": dt,
                  "port_only_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYANNOTE_METRICS_ENABLED": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> BenchReport:
    import torch

    from ports.common.blas import import_mlx

    from ports.pyannote_mlx.inference import SegmentationInference

    mx = import_mlx()
    fx = parity.fixture(64.3)
    model, orig = fx.model, fx.orig
    inf = SegmentationInference(model)

    def port_chunks(x):
        xm = mx.array(x)

        def f():
            mx.eval(model(xm))
        return f

    def orig_chunks(x):
        xt = torch.from_numpy(x)

        def f():
            with torch.inference_mode():
                orig(xt)
        return f

    def port_file(w):
        return lambda: inf(w).vad()

    def orig_file(w):
        return lambda: parity.original_inference(orig, w)

    rng = np.random.default_rng(0)
    b1 = fx.chunks[:1]
    b32 = np.ascontiguousarray(np.resize(fx.wav, (32, 1, 160000)) +
                               0.01 * rng.standard_normal((32, 1, 160000)).astype(np.float32))
    meta = {"torch_threads": torch.get_num_threads()}
    cases = [
        Case("chunk b1", port_chunks(b1), orig_chunks(b1), repeats=3, warmup=1,
             meta={**meta, "audio_s": 10.0}),
        Case("chunk b32", port_chunks(b32), orig_chunks(b32), repeats=1 if quick else 3,
             warmup=1, meta={**meta, "audio_s": 320.0}),
        Case("file 64s", port_file(fx.wav), orig_file(fx.wav), repeats=1 if quick else 2,
             warmup=0, meta={**meta, "audio_s": fx.wav.size / SR}),
    ]
    if not quick:
        hour = np.resize(fx.wav, 3600 * SR)
        cases.append(Case("file 1h", port_file(hour), orig_file(hour), repeats=1, warmup=0,
                          meta={**meta, "audio_s": 3600.0}))
    # Last and created lazily (export or cache read, session) inside the first warmup call, so
    # ORT's thread pool does not exist while the torch cases run.
    import onnxruntime

    from . import onnx_peer

    peer: dict = {}

    def ort_session():
        if "sess" not in peer:
            peer["sess"] = onnx_peer.session(onnx_peer.export_onnx(fx.checkpoint))
            peer["model"] = onnx_peer.inference_model(orig, peer["sess"])
        return peer

    def ort_chunks(x):
        return lambda: onnx_peer.run(ort_session()["sess"], x)

    def ort_file(w):
        return lambda: parity.original_inference(ort_session()["model"], w)

    pmeta = {**meta, "peer": f"onnxruntime {onnxruntime.__version__}"}
    cases += [
        Case("chunk b32: MLX vs ONNX Runtime", port_chunks(b32), ort_chunks(b32),
             repeats=1 if quick else 3, warmup=1, meta={**pmeta, "audio_s": 320.0}),
        Case("file 64s: MLX vs ONNX Runtime", port_file(fx.wav), ort_file(fx.wav),
             repeats=1 if quick else 2, warmup=0, meta={**pmeta, "audio_s": fx.wav.size / SR}),
    ]
    report = run_cases("pyannote_mlx", cases)
    for row in report.cases:
        # both sides timed in this process, the second being torch
        if row.get("original_s") and row.get("port_s") and "peer" not in row:
            row["throughput_vs_torch"] = row["original_s"] / row["port_s"]
            row["port_x_realtime"] = row["audio_s"] / row["port_s"]
    if not quick:
        next(r for r in report.cases if r["name"] == "file 1h").update(
            _port_only_rss(str(fx.checkpoint), 3600.0))
    return report
