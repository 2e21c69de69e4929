"""C kernels for the steps where torch's per-op overhead, not arithmetic, sets the speed.

Compiled on first use with the machine's C compiler (`cc`, or $CC) into a cache folder
($TUNER_CACHE_DIR, else ~/.cache/tuner/kernels), keyed by the source, the compiler and the CPU
(the build uses -march=native), and loaded with ctypes: no build step at install time, no torch
headers, about a second to compile. The cache folder must be ours, mode 0700, and every library in
it ours and writable by us alone, else nothing is loaded (a planted library's constructor would run
inside the sweep). Where there is no compiler, the build fails, the tensors are
not on the CPU, or TUNER_KERNELS=0, `load()` returns None and callers keep their torch path
(same arithmetic; tests compare the two).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "mf_lazy_adam.c"
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-shared"]

_p, _i, _f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
SIGNATURES = {  # name -> (restype, argtypes), as declared in the C source
    "mf_scores": (ctypes.c_double, [_p, _p, _p, _p, _i, _i, _i, _p]),
    "mf_lazy_adam": (None, [_p] * 10 + [_i] * 3 + [_f] * 6 + [_p] * 6),
}


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else the machine."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


class UnsafeCache(OSError):
    """The cache folder or a library in it could have been written by someone else: never load it."""


def _private_dir(path: Path) -> Path:
    """`path`, created 0700 if missing; refused unless it is a real folder of ours that no one else
    can write into (a planted folder in /tmp could hold a library with a constructor)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is not a directory here
        raise UnsafeCache(f"kernel cache {path} is not a plain folder")
    if st.st_uid != os.getuid():
        raise UnsafeCache(f"kernel cache {path} is owned by uid {st.st_uid}, not {os.getuid()}")
    if st.st_mode & 0o022:
        raise UnsafeCache(f"kernel cache {path} is writable by others (mode {st.st_mode & 0o777:o})")
    if st.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)  # ours and written by us alone: tighten (older versions made it 0755)
    return path


def _check_library(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise UnsafeCache(f"kernel {path.name} is not a regular file of uid {os.getuid()} writable by it alone")


def _cache_dir() -> Path:
    root = os.environ.get("TUNER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tuner")
    try:
        return _private_dir(Path(root) / "kernels")
    except UnsafeCache:
        raise
    except OSError:  # a read-only home: a private folder in the temporary folder still works
        return _private_dir(Path(tempfile.gettempdir()) / f"tuner-kernels-{os.getuid()}")


def library_name(cc: list[str]) -> str:
    """The library's file name for this source, compiler and CPU (computable by anyone: the folder guards it)."""
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id()]).encode()).hexdigest()
    return f"{SOURCE.stem}-{key[:16]}.so"


def _build(cc: list[str]) -> Path:
    out = _cache_dir() / library_name(cc)
    if not out.exists():
        # each concurrent trial builds into its own unpredictable temporary file, then renames atomically
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=".tmp")
        os.close(fd)
        try:
            subprocess.run([*cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, check=True)
            os.chmod(tmp, 0o700)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _check_library(out)
    return out


@functools.lru_cache(maxsize=None)
def load() -> ctypes.CDLL | None:
    """The compiled library with its signatures set, or None (with one warning saying why)."""
    if os.environ.get("TUNER_KERNELS", "1") == "0":
        return None
    cc = shlex.split(os.environ.get("CC", "cc"))
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (getattr(exc, "stderr", None) or "").strip().splitlines() or [str(exc)]
        warnings.warn(f"tuner: C kernels unavailable, using torch ops instead ({detail[0]})",
                      RuntimeWarning, stacklevel=2)
        return None
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib
