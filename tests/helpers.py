"""Small shared helpers for the unit tests: plain functions the test modules import (no fixtures)."""

from __future__ import annotations

import contextlib
import re
import textwrap
from pathlib import Path

import pytest

from tuner.errors import TunerError


def write(tmp_path: Path, name: str, text: str) -> str:
    """Write dedented `text` to tmp_path/name and return the path as a string."""
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


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
