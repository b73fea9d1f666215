"""ONNX Runtime as a peer for the bench: pyannote.audio's own torch model exported to ONNX.

The export reads the same checkpoint the bench's torch side loads (``Model.from_pretrained``), so
all three sides (port, torch, ORT) hold the same weights. The ``.onnx`` file is cached by the
checkpoint's content (``ports.common.hub.cached_conversion``), so each bench process reuses it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

INPUT, OUTPUT = "waveform", "logprobs"


def _export(src: Path, out: Path) -> None:
    import warnings

    import torch
    from pyannote.audio import Model

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    model = Model.from_pretrained(str(src)).eval()
    n = round(model.specifications.duration * model.hparams.sample_rate)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and eval-mode notes
        warnings.simplefilter("ignore")
        # dynamo=False: the dynamo exporter needs onnxscript, which the harness does not install.
        torch.onnx.export(model, (torch.zeros(1, 1, n),), str(out), dynamo=False,
                          input_names=[INPUT], output_names=[OUTPUT], opset_version=17,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})


def export_onnx(checkpoint: str | os.PathLike) -> Path:
    """``checkpoint`` (a pyannote segmentation checkpoint) as ONNX, exported once and cached:
    input (B, 1, duration * sample_rate) float32 waveform, output the model's log-probs."""
    import torch

    from ports.common.hub import cached_conversion

    return cached_conversion(checkpoint, "pyannote_mlx", f"onnx-torch{torch.__version__}",
                             _export, suffix=".onnx")


def session(onnx_path: str | os.PathLike, threads: int | None = None):
    """CPU ``InferenceSession`` with ``threads`` intra-op threads (default: torch's count, so
    both peers get the same cores)."""
    import onnxruntime as ort

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def run(sess, chunks: np.ndarray) -> np.ndarray:
    """Log-probs of (B, 1, N) float32 chunks."""
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(chunks, np.float32)})[0]


def inference_model(orig_model, sess):
    """A copy of the pyannote model whose forward runs ``sess``: pyannote's ``Inference`` keeps
    its own chunking, batching, powerset conversion and aggregation, only the forward changes."""
    import torch

    model = copy.deepcopy(orig_model).eval()

    def forward(x, *a, **k):
        return torch.from_numpy(run(sess, x.detach().cpu().numpy()))

    model.forward = forward  # instance attribute: nn.Module.__call__ dispatches to it
    return model
