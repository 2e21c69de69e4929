"""Strict, bounded reading of the YAML a user hands us (spec files and `--set` values).

PyYAML's safe_load is safe from code execution but not from everything else: it accepts
duplicate keys (the last silently wins), expands aliases (a 400-byte "billion laughs" file
takes forever to walk), recurses once per nesting level (a deep `[[[[...` overflows the
stack) and happily reads /dev/urandom until memory runs out. Everything here fails fast with
a TunerError of one line naming the file and, where known, the line.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from trainables.errors import TunerError, excerpt, where

MAX_SPEC_BYTES = 1024 * 1024  # a spec is a page of text; more is a mistake (or a device file)
MAX_DEPTH = 64  # nesting levels; a real spec uses 4


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects anchors/aliases, duplicate keys and deep nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        # a spec never needs & or *; refusing them outright makes exponential expansion impossible
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (& and *) are not allowed",
                                              event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it below with its position
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {excerpt(key)} (first on line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_text(text: str, source: str) -> Any:
    """YAML text -> Python value, or a one-line TunerError 'source[:line]: invalid YAML: ...'."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise TunerError(f"{where(source, None, line)}: invalid YAML: {problem}") from None
    except Exception as e:  # noqa: BLE001  PyYAML's constructors raise what they meet on bad input:
        # ValueError (a date 2024-13-45, a 5000-digit int), IndexError (`!!int` alone), KeyError (`!!bool x`)...
        raise TunerError(f"{source}: invalid YAML: {type(e).__name__}: {str(e)[:80]}") from None


def compose(text: str) -> Any:
    """The node tree of text (for line numbers), or None if it is not valid YAML."""
    try:
        return yaml.compose(text, Loader=StrictLoader)
    except Exception:  # noqa: BLE001  parse_text reports it; line numbers are only a nicety
        return None


def read_text(path: str, what: str = "spec file", cap: int = MAX_SPEC_BYTES) -> str:
    """A small regular UTF-8 text file's contents; never reads more than cap + 1 bytes."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise TunerError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):  # /dev/urandom, a FIFO, a folder: never open them
        raise TunerError(f"{path}: cannot read {what}: not a regular file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except OSError as e:
        raise TunerError(f"{path}: cannot read {what}: {e.strerror}") from None
    if len(data) > cap:
        raise TunerError(f"{path}: {what} is larger than {cap // 1024} KiB; is this the right file?")
    return decode(data, path)


def decode(data: bytes, path: str) -> str:
    """Strict UTF-8 (a BOM is dropped), with the line and column of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TunerError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col})") from None


def beside(anchor: str, path: str | None) -> str | None:
    """A path written in the file `anchor` (a spec, a claim, a manifest): `~` expanded, a relative one
    taken from the anchor file's folder, normalised; None stays None. The one place this is decided,
    so that what the spec check reads is what the data loader opens."""
    if path is None:
        return None
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(anchor)), path)
    return os.path.normpath(path)
