"""MAX encoder vs the installed openai-whisper AudioEncoder, layer by layer, random weights.

Each graph shape compiles once per process (tiny and base: a stem and a block graph each; a
cold compile is minutes on 2 cores, warm ~10 s from ~/.cache/modular)."""
import numpy as np
import pytest

from ports_parity.common.parity import ParityReport
from ports.whisper_max import model as M
from ports.whisper_max.config import dims_for
from ports_parity.whisper_max.parity import (LAYER_TOL, compare_stages, random_encoder, random_mel,
                                      torch_stages)


@pytest.fixture(scope="module", params=["tiny", "base"])
def random_pair(request):
    dims = dims_for(request.param)
    enc, sd = random_encoder(dims, seed=1)
    return request.param, dims, enc, sd, M.MaxAudioEncoder(dims, sd)


def test_every_layer_matches_openai(random_pair):
    name, dims, enc, _, port = random_pair
    # batch of 2: the graph runs per item, the original batched.
    mel = random_mel(dims, batch=2, seed=3)
    report = ParityReport("whisper_max")
    compare_stages(report, f"{name}: ", port, torch_stages(enc, mel), mel)
    print(report.table())
    report.assert_passed()
    names = [s.name for s in report.stages]
    assert names == [f"{name}: {s}" for s in
                     ["conv1", "conv2+pos", *[f"block{i}" for i in range(dims.n_audio_layer)],
                      "ln_post", "forward"]]


def test_unbatched_input_matches_batched(random_pair):
    _, dims, _, _, port = random_pair
    mel = random_mel(dims, batch=1, seed=5)
    np.testing.assert_array_equal(port(mel[0]), port(mel)[0])


def test_one_compiled_graph_serves_other_weights(random_pair):
    name, dims, _, _, port = random_pair
    before = dict(M._compiled)
    enc2, sd2 = random_encoder(dims, seed=7)
    port2 = M.MaxAudioEncoder(dims, sd2)
    assert M._compiled == before  # no new compile for a new weight set of the same shape
    mel = random_mel(dims, seed=9)
    ref = torch_stages(enc2, mel)["forward"]
    got = port2(mel)
    assert np.abs(got - ref).max() <= LAYER_TOL * np.abs(ref).max()
    assert np.abs(port(mel) - got).max() > 1e-2  # really the other weights


def test_bad_mel_is_rejected(random_pair):
    _, dims, _, _, port = random_pair
    with pytest.raises(ValueError, match="mel must have shape"):
        port(np.zeros((dims.n_mels, 2999), np.float32))
    with pytest.raises(ValueError, match="mel must have shape"):
        port(np.zeros((dims.n_mels + 1, 3000), np.float32))
    bad = np.zeros((dims.n_mels, 3000), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        port(bad)


def test_weights_with_wrong_dims_or_missing_keys_name_them():
    from ports.common.convert import ConversionError

    dims = dims_for("tiny")
    _, sd = random_encoder(dims, seed=0)
    sd_missing = dict(sd)
    del sd_missing["blocks.2.attn.key.weight"]
    with pytest.raises(ConversionError, match=r"blocks\.2\.attn\.key\.weight"):
        M.MaxAudioEncoder(dims, sd_missing)
    sd_extra = dict(sd, **{"blocks.0.attn.key.bias": np.zeros(384, np.float32)})
    with pytest.raises(ConversionError, match=r"blocks\.0\.attn\.key\.bias"):
        M.MaxAudioEncoder(dims, sd_extra)
    with pytest.raises(ConversionError, match=r"conv1\.weight \(512, 80, 3\) != expected \(384, 80, 3\)"):
        _, base_sd = random_encoder(dims_for("base"), seed=0)
        M.MaxAudioEncoder(dims, base_sd)
