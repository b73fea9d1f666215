"""HiFT vocoder: MLX port vs chatterbox 0.1.7's HiFTGenerator (seeded random weights, weight-norm
parametrized as in the checkpoint), loaded strictly through hift_rules."""
import numpy as np
import pytest

from ports_parity.s3gen.parity import hift_parity, original_hift, phase_drift, state_dict_numpy


@pytest.fixture(scope="module")
def report():
    rep = hift_parity(n_frames=40, seed=0)
    print(rep.table())
    return rep


def _ok(report, *names):
    bad = [report[n] for n in names if not report[n].passed]
    assert not bad, "\n".join(f"{s.name}: {s.metrics} tol {s.tolerance} {s.detail}" for s in bad)


def test_f0(report):
    _ok(report, "hift.f0")


def test_source_from_same_draws(report):
    # the original's Uniform phases and randn noise, injected: the port's SineGen + merge
    _ok(report, "hift.source_reproducible", "hift.source(original f0, same draws)",
        "hift.source(port f0, same draws)")


def test_decode_stages_with_original_source(report):
    _ok(report, "hift.s_stft", "hift.conv_pre", "hift.source_resblock.0", "hift.source_resblock.1",
        "hift.source_resblock.2", "hift.conv_post")


def test_waveform(report):
    _ok(report, "hift.wav(original source injected)", "hift.wav(port source)")
    assert report["hift.wav(original source injected)"].metrics["snr_db"] >= 60


def test_long_phase_does_not_drift():
    # float32 cumsum over samples drifts by ~pi after seconds; the per-frame scan must not
    r = phase_drift(30.0)
    assert r["max_abs"] < 1e-5, r


def test_converter_is_strict():
    from ports.common.convert import ConversionError
    from ports.s3gen.convert import load_hift

    sd = state_dict_numpy(original_hift(0), "mel2wav.")
    assert sum(k.endswith("original0") for k in sd) == 82  # every HiFT conv but source_downs
    gone = "mel2wav.resblocks.4.convs1.1.parametrizations.weight.original1"
    bad = dict(sd)
    del bad[gone]
    bad["mel2wav.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as e:
        load_hift(bad)
    assert gone in str(e.value) and "mel2wav.extra.weight" in str(e.value)
    bad = dict(sd)
    bad["mel2wav.conv_pre.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ConversionError, match="conv_pre.bias"):
        load_hift(bad)


def test_bad_source_shape():
    from ports.common.blas import import_mlx
    from ports.s3gen.hift import HiFTGenerator

    mx = import_mlx()
    m = HiFTGenerator()
    with pytest.raises(ValueError, match="source must be"):
        m.inference(mx.zeros((1, 80, 4)), source=mx.zeros((1, 1, 100)))


def test_bad_mel_shape():
    from ports.common.blas import import_mlx
    from ports.s3gen.hift import HiFTGenerator

    mx = import_mlx()
    with pytest.raises(ValueError, match="mel must be"):
        HiFTGenerator().inference(mx.zeros((1, 100, 4)))
