"""C kernels for the steps where torch's per-op overhead, not arithmetic, sets the speed.

Compiled on first use with the machine's C compiler (`cc`, or $CC) into a cache folder
($TUNER_CACHE_DIR, else ~/.cache/tuner/kernels), keyed by the source, the compiler and the CPU
(the build uses -march=native), and loaded with ctypes: no build step at install time, no torch
headers, about a second to compile. Where there is no compiler, the build fails, the tensors are
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


def _cache_dir() -> Path:
    root = os.environ.get("TUNER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tuner")
    path = Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:  # a read-only home: the temporary folder still works
        path = Path(tempfile.gettempdir()) / f"tuner-kernels-{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _build(cc: list[str]) -> Path:
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id()]).encode()).hexdigest()
    out = _cache_dir() / f"{SOURCE.stem}-{key[:16]}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")  # concurrent trials each build, then rename atomically
        subprocess.run([*cc, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True, check=True)
        os.replace(tmp, out)
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
