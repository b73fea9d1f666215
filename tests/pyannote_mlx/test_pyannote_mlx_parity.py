"""MLX PyanNet and Inference against the installed pyannote.audio 4.0.7 (real modules, real
checkpoint format, seeded random weights with the segmentation-3.0 hyper-parameters)."""
import numpy as np
import pytest

from ports_parity.common.parity import ParityReport
from ports_parity.pyannote_mlx import parity
from ports.pyannote_mlx.inference import SegmentationInference


@pytest.fixture(scope="module")
def fx():
    return parity.fixture(64.3)


def test_checkpoint_is_pyannote_format(fx):
    """pyannote itself loads the file the converter reads (strict), with its Specifications."""
    import torch
    from pyannote.audio import Model

    m = Model.from_pretrained(str(fx.checkpoint))
    assert type(m).__name__ == "PyanNet" and m.specifications.powerset
    for k, v in fx.orig.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_stages(fx):
    r = ParityReport("pyannote_mlx")
    parity.compare_stages(r, fx.model, fx.orig, fx.chunks)
    print(r.table())
    r.assert_passed()
    labels = r["hard labels (argmax) identical"].metrics
    # the weights are such that the argmax is not one constant class (else the check is vacuous)
    assert labels["classes_seen"] >= 5, labels


def test_stages_compiled_lstm_step(fx, monkeypatch):
    """The LSTM step under mx.compile (the GPU default; on the CPU with the arithmetic
    sigmoid/tanh, the fallback of the C++ layer) holds the same per-stage bounds."""
    from ports.pyannote_mlx.model import BiLSTM

    monkeypatch.setattr(BiLSTM, "step_kind", "jit")
    r = ParityReport("pyannote_mlx")
    parity.compare_stages(r, fx.model, fx.orig, fx.chunks)
    r.assert_passed()


def test_inference_conversation(fx):
    """>= 60 s two-voice espeak-ng conversation with noise/silence; length needs the padded chunk."""
    r = ParityReport("pyannote_mlx")
    parity.compare_inference(r, SegmentationInference(fx.model), fx.orig, fx.wav)
    print(r.table())
    r.assert_passed()
    info = r.info["inference"]["main"]
    assert info["seconds"] >= 60 and info["has_last_chunk"]
    assert 0.2 < info["speech_fraction"] < 0.95 and info["max_count"] >= 2
    assert info["speech_regions"] >= 10


@pytest.mark.parametrize("name", ["short 3.7s", "exact 12s", "silence+speech 11.5s"])
def test_inference_chunking_branches(fx, name):
    wav = parity.edge_lengths(fx.wav)[name]
    r = ParityReport("pyannote_mlx")
    parity.compare_inference(r, SegmentationInference(fx.model), fx.orig, wav, tag=f"[{name}] ")
    r.assert_passed()
    assert r.info["inference"][f"[{name}] "]["has_last_chunk"] == (name != "exact 12s")


def test_batch_size_does_not_change_labels(fx):
    wav = fx.wav[: round(14.5 * 16000)]
    a = SegmentationInference(fx.model, batch_size=32)(wav)
    b = SegmentationInference(fx.model, batch_size=2)(wav)
    assert np.array_equal(a.multilabel, b.multilabel)


@pytest.mark.parametrize("kind", ["fused", "eager"])
def test_stages_other_lstm_step_kinds(fx, monkeypatch, kind):
    """The CPU's small-batch step (MLX's own activations under mx.compile) and the step without
    a compiler hold the same per-stage bounds."""
    from ports.pyannote_mlx.model import BiLSTM

    monkeypatch.setattr(BiLSTM, "step_kind", kind)
    r = ParityReport("pyannote_mlx")
    parity.compare_stages(r, fx.model, fx.orig, fx.chunks)
    r.assert_passed()


def test_lstm_step_kind_by_batch(monkeypatch):
    from ports.common import mlx_layers
    from ports.pyannote_mlx.model import BiLSTM, step_fn

    from ports.pyannote_mlx import model

    lstm = BiLSTM(4, 2, 1)
    if mlx_layers.on_gpu():
        assert lstm._kind(1) == lstm._kind(128) == "jit"
    else:  # the set-up has g++: the C++ layer is the CPU default at every batch
        assert lstm._kind(1) == lstm._kind(128) == "native"
    monkeypatch.setattr(model, "native_lstm", lambda: None)  # AUDIO_PORTS_NATIVE=0, or no g++
    if mlx_layers.on_gpu():
        pass
    elif mlx_layers.cpu_jit_available():
        assert lstm._kind(lstm.jit_min_batch - 1) == "fused"
        assert lstm._kind(lstm.jit_min_batch) == "jit"
    monkeypatch.setattr(mlx_layers, "cpu_jit_available", lambda: False)
    if not mlx_layers.on_gpu():
        assert lstm._kind(128) == "eager"
    monkeypatch.setattr(BiLSTM, "step_kind", "fused")
    assert lstm._kind(128) == "fused"
    with pytest.raises(ValueError, match="unknown LSTM step kind"):
        step_fn("fast")
