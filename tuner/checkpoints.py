"""Checkpoint files that are verified before use, and a fall-back to an earlier intact one.

A torn or overwritten state.pt (disk full, a crash mid-copy, bit rot on shared storage) used to
error the trial on resume and then fail the whole sweep when the driver loaded the best checkpoint
for test metrics. Each state.pt gets a SHA-256 beside it; a reader checks it (when present), loads
with weights_only=True inside a try, and otherwise moves on to the previous checkpoint. Checkpoints
in bucket storage (run.storage) are listed and downloaded through their pyarrow filesystem.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any, Iterable

import pyarrow.fs
import torch
from ray.tune import Checkpoint

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
DIGEST_FILE = "state.pt.sha256"
_INDEX = re.compile(r"^checkpoint_(\d+)$")


class CorruptCheckpoint(Exception):
    pass


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(state: dict[str, Any], directory: str) -> None:
    """Write state.pt and its digest into `directory` (then handed to Tune as a checkpoint)."""
    path = os.path.join(directory, STATE_FILE)
    torch.save(state, path)
    with open(os.path.join(directory, DIGEST_FILE), "w") as fh:
        fh.write(_sha256(path))


def load_dir(directory: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state in a checkpoint folder, or CorruptCheckpoint saying why not."""
    path = os.path.join(directory, STATE_FILE)
    digest = os.path.join(directory, DIGEST_FILE)
    try:
        if os.path.isfile(digest):  # checkpoints written before digests existed have none
            with open(digest) as fh:
                if fh.read().strip() != _sha256(path):
                    raise CorruptCheckpoint(f"{path}: checksum mismatch")
        state = torch.load(path, map_location=device, weights_only=True)
    except CorruptCheckpoint:
        raise
    except Exception as e:  # noqa: BLE001 - torn zip, truncated file, missing file, bad pickle
        raise CorruptCheckpoint(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CorruptCheckpoint(f"{path}: not a training state")
    return state


def _index(path: str) -> int:
    m = _INDEX.match(path.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else -1


def checkpoint_of(where: str | Checkpoint) -> Checkpoint:
    """A checkpoint folder (local path) or a Ray Checkpoint (local, or in bucket storage)."""
    return where if isinstance(where, Checkpoint) else Checkpoint(os.path.abspath(where))


def label(ckpt: Checkpoint) -> str:
    """Where a checkpoint lies, as messages and summary.json name it: a path, or scheme://bucket/..."""
    kind = ckpt.filesystem.type_name
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


def earlier(where: str | Checkpoint) -> list[Checkpoint]:
    """The trial's other checkpoints older than this one, newest first (listed through its
    filesystem: a bucket as well as a folder)."""
    ckpt = checkpoint_of(where)
    parent, mine = ckpt.path.rstrip("/").rsplit("/", 1)[0], _index(ckpt.path)
    try:
        infos = ckpt.filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return []
    found = [i.path for i in infos if i.type == pyarrow.fs.FileType.Directory and -1 < _index(i.path) < mine]
    return [Checkpoint(p, filesystem=ckpt.filesystem) for p in sorted(found, key=_index, reverse=True)]


def load(ckpt: Checkpoint, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state of a checkpoint wherever it lies (a bucket one is downloaded to a temporary folder
    first), or CorruptCheckpoint naming it."""
    try:
        with ckpt.as_directory() as d:
            return load_dir(d, device)
    except CorruptCheckpoint as e:
        if ckpt.filesystem.type_name == "local":
            raise
        raise CorruptCheckpoint(f"{label(ckpt)}: {str(e).rsplit(': ', 1)[-1]}") from None
    except OSError as e:  # the download itself failed
        raise CorruptCheckpoint(f"{label(ckpt)}: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None


def load_with_fallback(where: str | Checkpoint, device: torch.device | str = "cpu") -> tuple[dict[str, Any] | None, str | None]:
    """(state, where it came from) from this checkpoint, else from the newest intact earlier one,
    else (None, None): the trial then starts again from epoch 1 rather than erroring."""
    newest = checkpoint_of(where)
    for candidate in [newest, *earlier(newest)]:
        try:
            state = load(candidate, device)
        except CorruptCheckpoint as e:
            log.warning("checkpoint unusable, trying the previous one: %s", e)
            continue
        if candidate.path != newest.path:
            log.warning("resumed from earlier checkpoint %s (newest %s was unusable)", label(candidate), label(newest))
        return state, label(candidate)
    log.warning("no intact checkpoint for %s: the trial starts again from epoch 1", label(newest))
    return None, None


def first_intact(candidates: Iterable[tuple[Any, Checkpoint]]) -> tuple[Any, dict[str, Any], str, list[str]] | None:
    """The first (key, checkpoint) that loads: (key, state, where, [skipped])."""
    skipped = []
    for key, ckpt in candidates:
        try:
            return key, load(ckpt, "cpu"), label(ckpt), skipped
        except CorruptCheckpoint as e:
            log.warning("skipping unusable checkpoint: %s", e)
            skipped.append(label(ckpt))
    return None


def best_intact(results: list, metric: str, mode: str, numbers: dict) -> tuple[Any, dict, dict, dict]:
    """(result, state, checkpoint metrics, info) for test metrics: the best intact checkpoint of the
    best trial, else that trial's next best, else the next best trial's. `info` (for summary.json)
    says which checkpoint was used and which were skipped."""
    sign = -1.0 if mode == "max" else 1.0

    def score(m) -> float:
        v = (m or {}).get(metric)
        return sign * float(v) if v is not None and v == v else float("inf")

    ranked = sorted(((score(m), i, r, c, m) for i, r in enumerate(results) if r.error is None and r.metrics
                     for c, m in (r.best_checkpoints or [])), key=lambda x: (x[0], x[1]))
    found = first_intact(((r, m), c) for _, _, r, c, m in ranked)
    if found is None:
        raise RuntimeError("no intact checkpoint in any trial: cannot compute test metrics")
    (result, metrics), state, path, skipped = found
    tid = result.metrics.get("trial_id")
    info = {"trial": numbers.get(tid, 0), "trial_id": tid, "epoch": int(metrics.get("epoch", 0)),
            "path": path, "fallback": bool(skipped), "skipped": skipped}
    if skipped:
        log.warning("test metrics from %s (skipped %d unusable checkpoint(s))", path, len(skipped))
    return result, state, metrics, info
