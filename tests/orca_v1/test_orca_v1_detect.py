"""orca_v1 aggregation rules (production smoothing, upstream references) and the detect CLI."""
import csv
import json

import numpy as np
import pytest

from ports.orca_v1.config import DetectConfig
from ports.orca_v1.decisions import (aggregate, merge_detections, orcahello_json,
                                  pandas_rolling2_mean, smooth_production)
from ports_parity.orca_v1.parity import golden_dir


def test_rolling_mean_equals_pandas():
    import pandas as pd
    rng = np.random.default_rng(0)
    for t in range(500):
        n = int(rng.integers(1, 70))
        x = rng.random(n) ** rng.uniform(0.2, 5)
        if t % 3 == 0:
            x = np.round(x, 2)
        if t % 5 == 0:
            x[rng.integers(0, n, n // 3)] = x[0]
        np.testing.assert_array_equal(pandas_rolling2_mean(x), pd.Series(x).rolling(2).mean().values)


def test_production_smoothing_hand_made():
    s = [0.25, 0.75, 1.0, 0.5]
    np.testing.assert_array_equal(smooth_production(s), [0.25, 0.5, 0.875, 0.75, 0.5])
    r = aggregate(s)
    assert r.local_predictions == [0, 0, 1, 1, 0]
    assert r.global_prediction == 0 and r.global_confidence == 81.25
    assert r.row_starts == [0, 1, 2, 3, 4] and r.row_duration_s == 1.0
    r = aggregate([0.0, 1.0, 1.0, 1.0, 0.0])  # rows 0, .5, 1, 1, .5, 0: three > 0.5? no: two
    assert r.local_predictions == [0, 0, 1, 1, 0, 0] and r.global_prediction == 0
    r = aggregate([0.75] * 3)  # rows .75 x4 -> positive, confidence 75 %
    assert r.local_predictions == [1, 1, 1, 1] and r.global_prediction == 1
    assert r.global_confidence == 75.0
    r = aggregate([0.1, 0.2])
    assert r.global_prediction == 0 and r.global_confidence == 0
    r = aggregate([])
    assert r.local_predictions == [] and r.global_prediction == 0 and "shorter" in r.note


def test_upstream_file_preds_reference_exact():
    p = next((golden_dir() / "upstream").glob("*_file_preds_reference.json"))
    ref = json.loads(p.read_text())
    r = aggregate(ref["local_confidences"], cfg=DetectConfig(aggregation="fastai_unsmoothed"))
    assert r.local_predictions == ref["local_predictions"] and len(r.local_predictions) == 58
    assert r.global_prediction == ref["global_prediction"] == 1
    assert r.global_confidence / 100.0 == ref["global_confidence"]  # exact, incl. the last bit
    assert [s["start_time_s"] for s in ref["segment_predictions"]] == r.row_starts
    seg = json.loads(next((golden_dir() / "upstream").glob("*_segment_preds_reference.json"))
                     .read_text())["segment_predictions"]  # fastai predict(), windows 32..34
    assert [seg[f"segment_{i}"] for i in range(3)] == ref["local_confidences"][32:35]
    # model_v1's mean_thresholded (sum/len, no *100/100) lands one ulp away
    m = aggregate(ref["local_confidences"], cfg=DetectConfig(aggregation="mean_thresholded"))
    assert abs(m.global_confidence - ref["global_confidence"]) < 1e-15


def test_model_v1_options():
    s = [0.9, 0.2, 0.7, 0.55, 0.1]
    r = aggregate(s, cfg=DetectConfig(aggregation="mean_top_k", mean_top_k=3))
    assert r.global_confidence == (0.9 + 0.7 + 0.55) / 3 and r.global_prediction == 1
    r = aggregate(s, cfg=DetectConfig(aggregation="mean_thresholded"))
    assert r.global_confidence == (0.9 + 0.7 + 0.55) / 3 and r.local_predictions == [1, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, cfg=DetectConfig(aggregation="max"))


def test_merge_and_orcahello_json():
    a = aggregate([0.9, 0.9, 0.9, 0.1, 0.1, 0.9], offset_s=60.0, duration_s=7.0)
    dets = merge_detections([a])
    # rows .9 .9 .9 .5 .1 .5 .9 (1 s each from 60 s)
    assert [(d.start_s, d.end_s) for d in dets] == [(60.0, 63.0), (66.0, 67.0)]
    doc = orcahello_json(a, audio_uri="x.wav", source_guid="rpi_orcasound_lab", uid="u")
    assert set(doc) == {"id", "modelId", "audioUri", "imageUri", "reviewed", "timestamp",
                        "whaleFoundConfidence", "location", "source_guid", "predictions"}
    n = len(a.local_predictions)
    assert doc["predictions"][0] == {"id": 0, "startTime": 0.0, "duration": 60.0 / n,
                                     "confidence": a.local_confidences[0]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from ports_parity.orca_v1 import save_random_weights

    return save_random_weights(tmp_path_factory.mktemp("w"), seed=3)


def test_detect_cli_outputs(tmp_path, weights, capsys):
    import soundfile as sf

    from ports.cli import main
    from ports.orca_v1 import frontend as F

    wav = golden_dir() / "short48k_2p5s.wav"
    short = tmp_path / "tiny.wav"
    sf.write(short, np.zeros(int(1.5 * 16000), np.float32), 16000)
    out = {k: tmp_path / f"o.{k}" for k in ("json", "csv", "txt", "png", "npz")}
    rc = main(["detect", str(wav), str(short), "--model", str(weights), "--json", str(out["json"]),
               "--csv", str(out["csv"]), "--raven", str(out["txt"]), "--plot", str(out["png"]),
               "--dump-spectrograms", str(out["npz"])])
    assert rc == 0
    text = capsys.readouterr().out
    assert "shorter than one 2-s window" in text
    res = json.loads(out["json"].read_text())
    assert len(res["files"]) == 2 and res["files"][1]["minutes"][0]["local_predictions"] == []
    with np.load(out["npz"]) as z:
        np.testing.assert_array_equal(z["mels"], F.file_features(wav).mels)
        assert z["starts"].tolist() == [0] and z["ends"].tolist() == [2]
    rows = list(csv.reader(open(out["csv"])))
    assert rows[0][:3] == ["file", "minute_start_s", "start_s"] and len(rows) == 1 + 2
    assert open(out["txt"]).readline().startswith("Selection\tView")
    assert out["png"].stat().st_size > 1000
    assert main(["detect", str(tmp_path / "nope.wav"), "--model", str(weights)]) == 2
