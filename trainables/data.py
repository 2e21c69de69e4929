"""Implicit-feedback datasets: loaders for real files, dense ids, chronological leave-one-out.

Every model sees the same split, so numbers compare: for each user, in time order, the last
item is the test target, the second-to-last the validation target, the rest is training.
Users need at least 3 interactions. Item and user ids are remapped to 0..n-1 in order of
first appearance; `Dataset.item_ids[i]` is item i's id in the file.

Formats (`format: auto` picks by extension, and for .txt by the number of fields per line):
- pairs:     "user item" per line, chronological within each user (SASRec/BERT4Rec files)
- sequences: "user i1 i2 ..." per line, chronological (S3-Rec files)
- csv / tsv: a header naming user and item columns (user|user_id, item|item_id), optional
             timestamp|time|ts column; rows are stably sorted by timestamp within each user
- inter:     RecBole atomic file: tab-separated, header "user_id:token\titem_id:token[...]"
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from trainables.errors import TunerError, excerpt

FORMATS = ("auto", "pairs", "sequences", "csv", "tsv", "inter")


@dataclass(frozen=True, eq=False)
class Split:
    """What one evaluation needs: a target per user and the items to mask (CSR)."""

    targets: np.ndarray  # int64 [U]
    seen_indptr: np.ndarray  # int64 [U+1]
    seen_items: np.ndarray  # int64 [nnz]


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    n_users: int
    n_items: int
    train_indptr: np.ndarray  # int64 [U+1]; user u's training items: train_items[indptr[u]:indptr[u+1]]
    train_items: np.ndarray  # int64 [nnz], chronological within each user
    valid: np.ndarray  # int64 [U], second-to-last item
    test: np.ndarray  # int64 [U], last item
    item_features: np.ndarray | None = None  # float32 [N, F] content features, if any
    item_ids: np.ndarray | None = None  # original id of each dense item
    truth: dict = field(default_factory=dict)  # planted structure (synthetic data only)
    refit: bool = False  # with_validation_in_training(): the validation item is training data

    @property
    def n_train(self) -> int:
        return int(self.train_items.shape[0])

    def train_users(self) -> np.ndarray:
        """int64 [nnz]: the user of each training interaction."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.train_indptr))

    def train_counts(self) -> np.ndarray:
        """int64 [N]: training interactions per item (popularity without leaking val/test)."""
        return np.bincount(self.train_items, minlength=self.n_items).astype(np.int64)

    def split(self, which: str) -> Split:
        """'valid': mask training items; 'test': mask training items and the validation item."""
        if which == "valid":
            return Split(self.valid, self.train_indptr, self.train_items)
        if which == "test":
            if self.refit:  # its validation item is in training and its `valid` targets are the test items
                raise ValueError("a refit data set's test split is its 'valid' split (with_validation_in_training)")
            lengths = np.diff(self.train_indptr) + 1
            indptr = np.zeros(self.n_users + 1, dtype=np.int64)
            np.cumsum(lengths, out=indptr[1:])
            items = np.empty(indptr[-1], dtype=np.int64)
            ends = indptr[1:] - 1  # last slot of each user: the validation item
            mask = np.ones(indptr[-1], dtype=bool)
            mask[ends] = False
            items[mask] = self.train_items
            items[ends] = self.valid
            return Split(self.test, indptr, items)
        raise ValueError(f"unknown split {which!r}; valid: valid, test")

    def sequences(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, items) of the history a model sees before predicting `which`'s target."""
        s = self.split(which)
        return s.seen_indptr, s.seen_items

    def describe(self) -> str:
        nnz = self.n_train + (1 if self.refit else 2) * self.n_users  # a refit's validation items are training
        return f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, {nnz:,} interactions"


def from_sequences(
    name: str,
    users: Sequence[str],
    seqs: Sequence[Sequence[str]],
    *,
    source: str = "<memory>",
    lines: Sequence[int] | None = None,
) -> Dataset:
    """Dense-remap raw ids and split each chronological sequence leave-one-out."""
    if not seqs:
        raise TunerError(f"{source}: no interactions found (empty dataset)")
    item_index: dict[str, int] = {}
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    short = np.flatnonzero(lengths < 3)
    if short.size:
        u = int(short[0])
        at = f":{lines[u]}" if lines is not None else ""
        raise TunerError(
            f"{source}{at}: user {excerpt(users[u])} has {int(lengths[u])} interaction(s); leave-one-out needs "
            f"at least 3 per user ({short.size} such users; filter them out first)"
        )
    flat = np.empty(int(lengths.sum()), dtype=np.int64)
    pos = 0
    for s in seqs:
        for it in s:
            idx = item_index.get(it)
            if idx is None:
                idx = item_index[it] = len(item_index)
            flat[pos] = idx
            pos += 1
    ends = np.cumsum(lengths)
    test = flat[ends - 1]
    valid = flat[ends - 2]
    keep = np.ones(flat.shape[0], dtype=bool)
    keep[ends - 1] = False
    keep[ends - 2] = False
    train_items = flat[keep]
    indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths - 2, out=indptr[1:])
    item_ids = np.array(list(item_index.keys()), dtype=object)
    return Dataset(name, len(seqs), len(item_index), indptr, train_items, valid, test, item_ids=item_ids)


def _detect(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv", ".inter"):
        return ext[1:]
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        counts = [len(line.split()) for _, line in zip(range(200), fh) if line.strip()]
    if not counts:
        raise TunerError(f"{path}: no interactions found (empty dataset)")
    # Majority vote, so one malformed line in a pairs file is reported as such by the pairs reader
    # (sequence files have >= 4 fields per valid line: a user and at least 3 items).
    return "pairs" if 2 * sum(c == 2 for c in counts) > len(counts) else "sequences"


def load(path: str, fmt: str = "auto", name: str | None = None) -> Dataset:
    """Read an interaction file (see module docstring for the formats)."""
    if fmt not in FORMATS:
        raise TunerError(f"{path}: unknown data format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not os.path.isfile(path):
        raise TunerError(f"{path}: no such data file")
    try:
        fmt = _detect(path) if fmt == "auto" else fmt
        reader = {"pairs": _read_pairs, "sequences": _read_sequences, "csv": _read_table,
                  "tsv": _read_table, "inter": _read_table}[fmt]
        kwargs = {"delimiter": "," if fmt == "csv" else "\t", "recbole": fmt == "inter"} if reader is _read_table else {}
        users, seqs, lines = reader(path, **kwargs)
    except UnicodeDecodeError as e:
        raise TunerError(f"{path}{_first_non_utf8_line(path)}: not a UTF-8 text file ({e.reason})") from None
    except OSError as e:
        raise TunerError(f"{path}: cannot read data file: {e.strerror}") from None
    return from_sequences(name or os.path.basename(path), users, seqs, source=path, lines=lines)


def _first_non_utf8_line(path: str) -> str:
    """':N' for the first line that is not UTF-8 (streamed: only on the error path), else ''."""
    try:
        with open(path, "rb") as fh:
            for ln, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return f":{ln}"
    except OSError:
        pass
    return ""


def _group(rows: Iterable[tuple[str, str, int]]) -> tuple[list[str], list[list[str]], list[int]]:
    """(user, item, line) rows in file order -> users in first-seen order, their item lists."""
    index: dict[str, int] = {}
    users: list[str] = []
    seqs: list[list[str]] = []
    first_line: list[int] = []
    for u, it, ln in rows:
        k = index.get(u)
        if k is None:
            k = index[u] = len(users)
            users.append(u)
            seqs.append([])
            first_line.append(ln)
        seqs[k].append(it)
    return users, seqs, first_line


def _read_pairs(path: str):
    def rows():
        with open(path, encoding="utf-8-sig") as fh:
            for ln, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise TunerError(f"{path}:{ln}: expected 'user item', got {len(parts)} fields: {line.strip()[:60]!r}")
                yield parts[0], parts[1], ln

    return _group(rows())


def _read_sequences(path: str):
    users, seqs, lines = [], [], []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for ln, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise TunerError(f"{path}:{ln}: expected 'user item1 item2 ...', got only {excerpt(parts[0])}")
            if parts[0] in seen:
                raise TunerError(f"{path}:{ln}: user {excerpt(parts[0])} already appeared on line {seen[parts[0]]}")
            seen[parts[0]] = ln
            users.append(parts[0])
            seqs.append(parts[1:])
            lines.append(ln)
    return users, seqs, lines


_USER_COLS = ("user", "user_id", "userid", "uid")
_ITEM_COLS = ("item", "item_id", "itemid", "iid")
_TIME_COLS = ("timestamp", "time", "ts")


def _read_table(path: str, delimiter: str, recbole: bool):
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: tolerate a BOM (Excel)
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            return _table_rows(path, reader, recbole)
        except csv.Error as e:  # e.g. a field over csv.field_size_limit() (128 KiB)
            raise TunerError(f"{path}:{reader.line_num}: malformed {'csv' if delimiter == ',' else 'tsv'} "
                             f"row: {str(e)[:100]}") from None


def _table_rows(path: str, reader, recbole: bool):
    """The rows of a csv/tsv/inter file read through `reader` -> (users, seqs, lines)."""
    header = next(reader, None)
    if header is None:
        raise TunerError(f"{path}: no interactions found (empty dataset)")
    cols = [h.strip().lower() for h in header]
    if recbole:
        if not all(":" in c for c in cols):
            raise TunerError(f"{path}:1: RecBole .inter header needs name:type columns, got {excerpt(header)}")
        cols = [c.split(":", 1)[0] for c in cols]

    def find(options, required):
        for o in options:
            if o in cols:
                return cols.index(o)
        if required:
            raise TunerError(f"{path}:1: header has no {options[0]} column (accepted: {', '.join(options)}); "
                             f"got {excerpt(header)}")
        return None

    ui, ii, ti = find(_USER_COLS, True), find(_ITEM_COLS, True), find(_TIME_COLS, False)
    rows = []
    for rec in reader:
        ln = reader.line_num  # physical line (a quoted field may span lines)
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(cols):
            raise TunerError(f"{path}:{ln}: expected {len(cols)} fields, got {len(rec)}")
        t = 0.0
        if ti is not None:
            try:
                t = float(rec[ti])
            except ValueError:
                raise TunerError(f"{path}:{ln}: timestamp {excerpt(rec[ti])} is not a number") from None
            if not math.isfinite(t):  # NaN would silently scramble the chronological sort
                raise TunerError(f"{path}:{ln}: timestamp {excerpt(rec[ti])} is not a finite number")
        u, it = rec[ui].strip(), rec[ii].strip()
        if not u or not it:
            raise TunerError(f"{path}:{ln}: empty user or item id")
        rows.append((t, ln, u, it))
    if ti is not None:
        rows.sort(key=lambda r: (r[0], r[1]))  # stable chronological order
    return _group((u, it, ln) for _, ln, u, it in rows)


def load_item_attributes(path: str, data: Dataset) -> np.ndarray:
    """S3-Rec item2attributes.json -> float32 [N, A] multi-hot over attribute ids."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as e:
        raise TunerError(f"{path}: cannot read item attributes: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # bad JSON, not UTF-8, nested thousands deep
        raise TunerError(f"{path}: cannot read item attributes: {type(e).__name__}: {str(e)[:100]}") from None
    if not isinstance(raw, dict):
        raise TunerError(f"{path}: expected a JSON object {{item_id: [attribute ids]}}")
    attr_index: dict = {}
    rows, cols = [], []
    for i, orig in enumerate(data.item_ids if data.item_ids is not None else range(data.n_items)):
        attrs = raw.get(str(orig), [])
        if not isinstance(attrs, list) or not all(isinstance(a, (str, int, float)) for a in attrs):
            raise TunerError(f"{path}: item {excerpt(str(orig))}: expected a list of attribute ids, "
                             f"got {excerpt(attrs)}")
        for a in attrs:
            j = attr_index.setdefault(a, len(attr_index))
            rows.append(i)
            cols.append(j)
    out = np.zeros((data.n_items, max(1, len(attr_index))), dtype=np.float32)
    out[rows, cols] = 1.0
    return out


def with_validation_in_training(data: Dataset) -> Dataset:
    """The refit data set (scikit-learn's refit=True after a search): each user's validation item
    becomes the last training item, and the test item is the only target left.

    It has no validation target of its own: its `valid` split IS the original test split (the
    same targets, the same masked items, the same histories), so a refit's per-epoch `val_`
    metrics are test metrics, to be read only at an epoch fixed beforehand (the best epoch of the
    run that kept validation apart), never to choose one. Its `test` split raises: evaluate 'valid'.
    """
    from dataclasses import replace

    s = data.split("test")  # histories: training items then the validation item; target: test
    return replace(data, name=f"{data.name}+valid", train_indptr=s.seen_indptr, train_items=s.seen_items,
                   valid=data.test, test=data.test, refit=True)


def user_slice(data: Dataset, n: int, seed: int) -> Dataset:
    """`n` users drawn with `seed` (all of them if fewer), their histories whole; the items stay as they
    are, so item features and ids still line up."""
    from dataclasses import replace

    n = min(int(n), data.n_users)
    keep = np.sort(np.random.default_rng(seed).choice(data.n_users, size=n, replace=False))
    starts, ends = data.train_indptr[keep], data.train_indptr[keep + 1]
    indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    items = np.concatenate([data.train_items[a:b] for a, b in zip(starts, ends)] or [np.zeros(0, np.int64)])
    return replace(data, n_users=n, train_indptr=indptr, train_items=items.astype(np.int64),
                   valid=data.valid[keep], test=data.test[keep])
