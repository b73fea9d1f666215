"""ports.common.native: run-time C++ builds, cached by source, compiler and CPU."""
import ctypes

import pytest

from ports.common import native


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_CACHE", str(tmp_path / "cache"))
    native.load.cache_clear()
    yield tmp_path / "cache" / "native"
    native.load.cache_clear()


def _src(tmp_path, body="extern \"C\" int answer(void) { return 42; }\n"):
    p = tmp_path / "k.cpp"
    p.write_text(body)
    return str(p)


def test_build_once_and_reuse(cache, tmp_path):
    lib = native.load(_src(tmp_path), abi=("answer", 42))
    assert isinstance(lib, ctypes.CDLL) and lib.answer() == 42
    built = sorted(cache.glob("k-*.so"))
    assert len(built) == 1
    native.load.cache_clear()
    mtime = built[0].stat().st_mtime_ns
    native.load(_src(tmp_path), abi=("answer", 42))
    assert built[0].stat().st_mtime_ns == mtime  # not rebuilt
    # a changed source is a new build next to the old one
    native.load(_src(tmp_path, 'extern "C" int answer(void) { return 43; }\n'))
    assert len(list(cache.glob("k-*.so"))) == 2


def test_abi_mismatch_is_an_error(cache, tmp_path):
    with pytest.raises(RuntimeError, match="answer\\(\\) is 42, expected 1"):
        native.load(_src(tmp_path), abi=("answer", 1))


def test_build_failure_warns_and_falls_back(cache, tmp_path):
    with pytest.warns(RuntimeWarning, match="k.cpp: native build failed"):
        assert native.load(_src(tmp_path, "this is not C++\n")) is None
    assert not list(cache.glob("*.so")) and not list(cache.glob(".*tmp"))


def test_off_switch_and_no_compiler(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_PORTS_NATIVE", "0")
    assert native.load(_src(tmp_path)) is None
    monkeypatch.delenv("AUDIO_PORTS_NATIVE")
    native.load.cache_clear()
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert native.load(_src(tmp_path)) is None
