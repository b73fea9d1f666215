"""Hub resolution through huggingface_hub against a real cache layout built here (no network)."""
import hashlib

import pytest

from ports.common import hub
from ports_parity.hf_cache import add_repo, use_offline


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    use_offline(cache, monkeypatch)
    add_repo(cache, "owner/model", {"weights.bin": b"v1-weights", "sub/config.json": b"{}"},
             commit="a" * 40)
    add_repo(cache, "owner/model", {"weights.bin": b"v2-weights"}, commit="b" * 40, ref="v2")
    return cache


def test_resolve_file_from_hf_cache(hf_cache):
    p = hub.resolve_file("owner/model", "weights.bin")
    assert p.read_bytes() == b"v1-weights" and "snapshots" in str(p)
    assert hub.resolve_file("owner/model", "weights.bin", revision="v2").read_bytes() == b"v2-weights"
    assert hub.resolve_file("owner/model", "sub/config.json").read_bytes() == b"{}"


def test_resolve_dir_from_hf_cache(hf_cache):
    d = hub.resolve_dir("owner/model")
    assert (d / "weights.bin").read_bytes() == b"v1-weights"


def test_missing_file_offline_is_a_clear_error(hf_cache):
    with pytest.raises(hub.ModelSourceError, match="missing.bin.*owner/model.*local path"):
        hub.resolve_file("owner/model", "missing.bin")
    with pytest.raises(hub.ModelSourceError, match="other/repo"):
        hub.resolve_file("other/repo", "x.bin")


def test_local_sources(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert hub.resolve_file(f) == f
    assert hub.resolve_file(tmp_path, "w.bin") == f
    with pytest.raises(hub.ModelSourceError, match="w2.bin not found.*w.bin"):
        hub.resolve_file(tmp_path, "w2.bin")
    with pytest.raises(hub.ModelSourceError, match="neither"):
        hub.resolve_file(str(tmp_path / "nope" / "deeper" / "x"))
    assert hub.resolve_dir(tmp_path) == tmp_path


def test_cached_conversion_runs_once_per_content(tmp_path, hf_cache):
    calls = []

    def convert(src, out):
        calls.append(src)
        out.write_bytes(src.read_bytes()[::-1])

    src = hub.resolve_file("owner/model", "weights.bin")
    a = hub.cached_conversion(src, "unit", "rev1", convert)
    b = hub.cached_conversion(src, "unit", "rev1", convert)
    assert a == b and len(calls) == 1 and a.read_bytes() == b"sthgiew-1v"
    # the HF blob name is the sha256: reused instead of re-hashing
    assert hashlib.sha256(b"v1-weights").hexdigest()[:20] in a.name
    local = tmp_path / "other.bin"
    local.write_bytes(b"v2-weights")
    c = hub.cached_conversion(local, "unit", "rev1", convert)
    assert c != a and len(calls) == 2
    hub.cached_conversion(src, "unit", "rev2", convert)
    assert len(calls) == 3


def test_failed_conversion_leaves_no_file(tmp_path):
    src = tmp_path / "s.bin"
    src.write_bytes(b"abc")

    def boom(s, out):
        out.write_bytes(b"half")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        hub.cached_conversion(src, "unit2", "t", boom)
    assert not [p for p in hub.cache_dir("unit2").iterdir()]
