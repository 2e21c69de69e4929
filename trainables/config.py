"""Mapping -> frozen dataclass, with the type checks and casts YAML needs.

Every typed config in the project (spec sections, model configs) is a frozen dataclass whose
field defaults are the single source of defaults. `build()` rejects unknown keys, casts what
YAML gets wrong (PyYAML reads `1e-4` as a string) and checks `choices`/`low`/`high` that a
field declares in its metadata. Errors are TunerError lines naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from typing import Any, Callable, Literal, Mapping

from trainables.errors import TunerError, excerpt, where

# Maps a dotted key ("space.lr.low") to its line in the YAML file, when known.
LineOf = Callable[[str], "int | None"]


def _no_line(_key: str) -> None:
    return None


def choice(default: Any, choices: typing.Iterable[Any] | Callable[[], typing.Iterable[Any]], doc: str = "") -> Any:
    """A field whose value must be one of `choices` (e.g. a registry's names).

    A callable is read at every check, so an entry added to a registry later is a valid choice."""
    return dataclasses.field(default=default, metadata={"choices": choices if callable(choices) else tuple(choices),
                                                        "doc": doc})


def choices_of(f: dataclasses.Field) -> tuple[Any, ...] | None:
    """The valid values of a `choice` field now (None for other fields)."""
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


def bounded(default: Any, low: float | None = None, high: float | None = None, doc: str = "",
            aliases: tuple[str, ...] = ()) -> Any:
    """A numeric field with inclusive bounds; `aliases` are its deprecated names (see resolve_aliases)."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "doc": doc, "aliases": aliases})


_warned: set[tuple[str, str, str]] = set()  # (file or config module, old, new): one deprecation line each per process


def resolve_aliases(cls: type, raw: Mapping[str, Any], file: str | None = None, prefix: str = "",
                    line_of: LineOf = _no_line) -> Mapping[str, Any]:
    """`raw` with deprecated key names (a field's metadata `aliases`) renamed to the field's name.

    Prints one line on stderr per file and old name; an old and a new name both given is an error."""
    renames = {a: f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}
    if not isinstance(raw, Mapping) or not renames.keys() & raw.keys():
        return raw
    out = {}
    for k, v in raw.items():
        new = renames.get(k, k)
        if new != k:
            if new in raw:
                key = f"{prefix}{k}"
                raise TunerError(f"{where(file, key, line_of(key))}: {k} is the old name of {new}; give only {new}")
            source = file or cls.__module__
            if (source, k, new) not in _warned:
                _warned.add((source, k, new))
                print(f"{source}: {k} is deprecated; use {new}", file=sys.stderr)
        out[new] = v
    return out


def text(default: str | None, max_len: int, doc: str = "") -> Any:
    """A string field of at most `max_len` characters (names end up in paths and databases)."""
    return dataclasses.field(default=default, metadata={"max_len": max_len, "doc": doc})


def short_number(v: Any) -> str:
    """A number for a message: 1e+300, not 301 digits."""
    s = str(v)
    return s if len(s) <= 20 else f"{v:.3g}"


# A scalar caster: (YAML value, fail) -> the cast value; fail(expected) builds the TunerError
# "<where>: expected <expected>, got <value>" for the caller to raise.
Fail = Callable[[str], TunerError]


def _to_bool(value: Any, fail: Fail) -> bool:
    if isinstance(value, bool):
        return value
    raise fail("true or false")


def _to_int(value: Any, fail: Fail) -> int:
    """An int, a float with no fraction (2.0) or a string of one ("1e3": PyYAML's reading of 1e3)."""
    if isinstance(value, bool):  # bool is an int subclass; true is no integer in a config
        raise fail("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            raise fail("an integer") from None
        if f.is_integer():
            return int(f)
    raise fail("an integer")


def _to_float(value: Any, fail: Fail) -> float:
    """A finite float from a number or a numeric string (PyYAML reads 1e-4, without a dot, as a string)."""
    if isinstance(value, bool):
        raise fail("a number")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise fail("a number") from None
    else:
        raise fail("a number")
    if not math.isfinite(out):
        raise fail("a finite number")
    return out


def _to_str(value: Any, fail: Fail) -> str:
    if isinstance(value, str):
        return value
    raise fail("a string")


_SCALARS: dict[Any, Callable[[Any, Fail], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _cast_union(value: Any, tp: Any, key: str, file: str | None, line_of: LineOf) -> Any:
    """The first member of the union that casts `value`; None where the union allows it; else the
    first member's error (`X | None` reports X's expectation)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None and len(args) < len(typing.get_args(tp)):
        return None
    errors = []
    for a in args:
        try:
            return cast(value, a, key, file, line_of)
        except TunerError as e:
            errors.append(e)
    raise errors[0]


def _cast_literal(value: Any, tp: Any, key: str, file: str | None, line_of: LineOf) -> Any:
    allowed = typing.get_args(tp)
    if value not in allowed:
        raise TunerError(f"{where(file, key, line_of(key))}: {excerpt(value)} is not one of {', '.join(map(str, allowed))}")
    return value


def _cast_tuple(value: Any, tp: Any, key: str, file: str | None, line_of: LineOf) -> tuple:
    """tuple[X, ...] from a list (each element cast, its key indexed: key[i]) or from one scalar."""
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        value = [value]
    inner = args[0] if args else Any
    return tuple(cast(v, inner, f"{key}[{i}]", file, line_of) for i, v in enumerate(value))


def cast(value: Any, tp: Any, key: str, file: str | None = None, line_of: LineOf = _no_line) -> Any:
    """Cast one YAML value to the annotated type `tp`, or raise a TunerError naming `key`."""

    def fail(expected: str) -> TunerError:
        return TunerError(f"{where(file, key, line_of(key))}: expected {expected}, got {excerpt(value)}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _cast_union(value, tp, key, file, line_of)
    if origin is Literal:
        return _cast_literal(value, tp, key, file, line_of)
    if origin is tuple:
        return _cast_tuple(value, tp, key, file, line_of)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp in _SCALARS:
        return _SCALARS[tp](value, fail)
    raise TypeError(f"config.cast: unsupported annotation {tp!r} for {key}")


def check_field(f: dataclasses.Field, value: Any, key: str, file: str | None, line_of: LineOf) -> None:
    """Apply a field's `choices`/`low`/`high` metadata to a cast value."""
    meta, choices = f.metadata, choices_of(f)
    if choices is not None and value not in choices:
        valid = ", ".join(map(str, choices))
        raise TunerError(f"{where(file, key, line_of(key))}: unknown {f.name} {excerpt(value)}; valid: {valid}")
    low, high = meta.get("low"), meta.get("high")
    if value is not None and isinstance(value, (int, float)):
        if low is not None and value < low:
            raise TunerError(f"{where(file, key, line_of(key))}: must be >= {short_number(low)}, got {short_number(value)}")
        if high is not None and value > high:
            raise TunerError(f"{where(file, key, line_of(key))}: must be <= {short_number(high)}, got {short_number(value)}")
    max_len = meta.get("max_len")
    if max_len is not None and isinstance(value, str) and len(value) > max_len:
        raise TunerError(f"{where(file, key, line_of(key))}: at most {max_len} characters, got {len(value)}")


def fields_of(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """{name: (field, resolved type)} of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def build(
    cls: type,
    raw: Mapping[str, Any] | None,
    *,
    file: str | None = None,
    prefix: str = "",
    line_of: LineOf = _no_line,
    nested: Mapping[str, Callable[..., Any]] | None = None,
) -> Any:
    """Build dataclass `cls` from `raw`: unknown keys, wrong types and bad values are errors.

    `nested` maps a field name to a builder(raw, prefix) for sections with their own logic.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        key = prefix.rstrip(".") or "<top level>"
        raise TunerError(f"{where(file, key, line_of(key))}: expected a mapping, got {excerpt(raw)}")
    raw = resolve_aliases(cls, raw, file, prefix, line_of)
    known = fields_of(cls)
    for k in raw:
        if k not in known:
            key = f"{prefix}{k}"
            valid = ", ".join(known)
            raise TunerError(f"{where(file, key, line_of(key))}: unknown key; valid keys: {valid}")
    kwargs = {}
    for name, (f, tp) in known.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                key = f"{prefix}{name}"
                parent = prefix.rstrip(".")
                line = line_of(key) or (line_of(parent) if parent else None)
                raise TunerError(f"{where(file, key, line)}: missing; this key is required")
            continue
        key = f"{prefix}{name}"
        if nested and name in nested:
            kwargs[name] = nested[name](raw[name], f"{key}.")
            continue
        value = cast(raw[name], tp, key, file, line_of)
        check_field(f, value, key, file, line_of)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A frozen config as a plain dict (tuples become lists) for YAML/MLflow."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)
