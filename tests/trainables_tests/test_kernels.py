"""The C kernel cache cannot be planted: a folder or library that someone else could have written is
never loaded (its constructor would run inside the sweep); the torch path runs instead."""

import os
import shutil
import stat
import subprocess

import pytest

from trainables import kernels

NOBODY = 65534
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="planting as another user needs chown (root)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNER_KERNELS", "1")
    monkeypatch.delenv("CC", raising=False)
    kernels.load.cache_clear()
    yield tmp_path / "cache" / "kernels"
    kernels.load.cache_clear()


def plant(path, marker):
    """A library whose constructor writes `marker`: proof of whether it was ever loaded."""
    src = path.parent / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(path)], check=True, capture_output=True)
    src.unlink()


@needs_cc
def test_fresh_cache_is_private_and_leaves_no_temporary_files(cache):
    assert kernels.load() is not None
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    names = os.listdir(cache)
    assert len(names) == 1 and names[0].endswith(".so"), names


@needs_cc
def test_an_open_cache_folder_of_ours_is_tightened(cache):
    cache.mkdir(parents=True, mode=0o755)
    os.chmod(cache, 0o755)
    assert kernels.load() is not None
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


@needs_cc
@pytest.mark.parametrize("how", ["world-writable folder", "folder of another user", "library of another user",
                                 "group-writable library", "symlinked folder"])
def test_a_planted_library_is_never_loaded(cache, tmp_path, how):
    if how.endswith("another user") and os.getuid() != 0:
        pytest.skip("planting as another user needs chown (root)")
    marker = tmp_path / "constructor-ran"
    target = cache
    cache.parent.mkdir(parents=True)
    if how == "symlinked folder":  # the cache path points at a folder someone else prepared
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        os.symlink(target, cache)
    else:
        cache.mkdir(mode=0o700)
    lib = target / kernels.library_name(["cc"])
    plant(lib, marker)
    if how == "world-writable folder":
        os.chmod(target, 0o777)
    elif how == "folder of another user":
        os.chown(target, NOBODY, NOBODY)
    elif how == "library of another user":
        os.chown(lib, NOBODY, NOBODY)
    elif how == "group-writable library":
        os.chmod(lib, 0o775)
    with pytest.warns(RuntimeWarning, match="C kernels unavailable, using torch ops instead"):
        assert kernels.load() is None
    assert not marker.exists(), "the planted library's constructor ran"


@needs_root
def test_the_temporary_fallback_folder_is_checked_too(monkeypatch, tmp_path):
    """A read-only home sends the cache to /tmp/tuner-kernels-<uid>: one planted there is refused."""
    planted = tmp_path / "tmp"
    (planted / f"tuner-kernels-{os.getuid()}").mkdir(parents=True, mode=0o700)
    os.chown(planted / f"tuner-kernels-{os.getuid()}", NOBODY, NOBODY)
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(planted))
    home = tmp_path / "file-not-folder"
    home.write_text("x")  # mkdir under a file fails: the home cache is unusable
    monkeypatch.setenv("TUNER_CACHE_DIR", str(home))
    with pytest.raises(kernels.UnsafeCache, match="owned by uid"):
        kernels._cache_dir()
