"""The bench's ONNX Runtime peer does the original's work: the ONNX export of pyannote's own
model, run by ORT, gives pyannote's torch outputs within fp32 tolerance (so timing it is fair)."""
import numpy as np
import pytest

from ports_parity.pyannote_mlx import onnx_peer, parity


@pytest.fixture(scope="module")
def fx():
    return parity.fixture(64.3)


@pytest.fixture(scope="module")
def sess(fx):
    path = onnx_peer.export_onnx(fx.checkpoint)
    assert onnx_peer.export_onnx(fx.checkpoint) == path  # cached by checkpoint content
    return onnx_peer.session(path)


def test_ort_forward_matches_torch(fx, sess):
    import torch

    with torch.inference_mode():
        ref = fx.orig(torch.from_numpy(fx.chunks)).numpy()
    out = onnx_peer.run(sess, fx.chunks)
    assert out.shape == ref.shape
    err = np.abs(out - ref).max()
    assert err <= parity.STAGE_TOL["logprobs"]["max_abs"], err
    assert np.array_equal(out.argmax(-1), ref.argmax(-1))


def test_ort_inside_pyannote_inference(fx, sess, monkeypatch):
    """The ORT session as the model inside pyannote's Inference: same sliding windows, same
    frame labels as the torch model (21.5 s of the bench's conversation: 12 full chunks and the
    padded last one; the forward itself is checked above)."""
    wav = fx.wav[: round(21.5 * parity.SR)]
    ref = parity.original_inference(fx.orig, wav)
    batches = []
    run = onnx_peer.run
    monkeypatch.setattr(onnx_peer, "run", lambda s, x: batches.append(len(x)) or run(s, x))
    out = parity.original_inference(onnx_peer.inference_model(fx.orig, sess), wav)
    assert sum(batches) >= 13, batches  # every chunk went through ORT, not torch
    assert out.data.shape == ref.data.shape
    assert np.array_equal(out.data, ref.data)
