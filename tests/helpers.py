"""Small shared helpers for the unit tests: plain functions the test modules import (no fixtures)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainables.errors import TunerError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real data sets lie in shared/ beside the checkout (as in CI); tests that read them skip without.
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def write(tmp_path: Path, name: str, text: str) -> str:
    """Write dedented `text` to tmp_path/name and return the path as a string."""
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def write_spec(tmp_path: Path, body: dict, name: str = "spec.yaml") -> str:
    """Write a spec dict as YAML (keys in the order given) to tmp_path/name; the path as a string."""
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return str(p)


def tracking_uri(out_dir) -> str:
    """The MLflow store a sweep with `--output out_dir` (and no tracking.uri) logs to."""
    return f"sqlite:///{os.path.join(str(out_dir), 'mlflow.db')}"


def raises_tuner_error(fn, *args, **kwargs) -> str:
    """Call fn and return the TunerError message, checking it is a single line."""
    with pytest.raises(TunerError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def assert_location(msg: str, path: str, line: int | None = None, key: str | None = None) -> None:
    """The message starts with 'path[:line]' and names `key` (if given)."""
    prefix = f"{path}:{line}:" if line is not None else f"{path}"
    assert msg.startswith(prefix), f"expected {prefix!r} at the start of {msg!r}"
    if key is not None:
        assert re.search(rf"(^|[\s:]){re.escape(key)}(:|\s|$)", msg), f"key {key!r} not named in {msg!r}"


@contextlib.contextmanager
def torch_threads(n: int):
    """Tiny models: intra-op threads only add contention on a busy 2-core runner (up to 10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_script(args, timeout, env=None, cwd=None):
    """Run a script in its own process group; on timeout, SIGTERM it (its finally shuts its cluster
    down), then kill the whole group: nothing it started outlives the test."""
    p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out, err = "", "killed"
        pytest.fail(f"{args[0]} ran past {timeout}s: {err[-2000:]}")
    finally:
        kill_group(p)
    return p.returncode, out, err


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and everything in its group; reap it."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    p.wait()
