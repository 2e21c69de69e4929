"""Checkpoint files that are verified before use, and a fall-back to an earlier intact one.

A torn or overwritten state.pt (disk full, a crash mid-copy, bit rot on shared storage) used to
error the trial on resume and then fail the whole sweep when the driver loaded the best checkpoint
for test metrics. Each state.pt gets a SHA-256 beside it; a reader checks it (when present), loads
with weights_only=True inside a try, and otherwise moves on to the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any, Iterable

import torch

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


def _index(directory: str) -> int:
    m = _INDEX.match(os.path.basename(os.path.normpath(directory)))
    return int(m.group(1)) if m else -1


def earlier(directory: str) -> list[str]:
    """The trial's other checkpoint folders older than `directory`, newest first."""
    parent, mine = os.path.dirname(os.path.normpath(directory)), _index(directory)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = [os.path.join(parent, n) for n in names if _INDEX.match(n) and int(_INDEX.match(n).group(1)) < mine]
    return sorted(found, key=_index, reverse=True)


def load_with_fallback(directory: str, device: torch.device | str = "cpu") -> tuple[dict[str, Any] | None, str | None]:
    """(state, folder used) from `directory`, else from the newest intact earlier checkpoint, else
    (None, None): the trial then starts again from epoch 1 rather than erroring."""
    for candidate in [directory, *earlier(directory)]:
        try:
            state = load_dir(candidate, device)
        except CorruptCheckpoint as e:
            log.warning("checkpoint unusable, trying the previous one: %s", e)
            continue
        if candidate != directory:
            log.warning("resumed from earlier checkpoint %s (newest %s was unusable)", candidate, directory)
        return state, candidate
    log.warning("no intact checkpoint for %s: the trial starts again from epoch 1", directory)
    return None, None


def first_intact(candidates: Iterable[tuple[Any, str]]) -> tuple[Any, dict[str, Any], str, list[str]] | None:
    """The first (key, folder) whose checkpoint loads: (key, state, folder, [skipped folders])."""
    skipped = []
    for key, folder in candidates:
        try:
            return key, load_dir(folder, "cpu"), folder, skipped
        except CorruptCheckpoint as e:
            log.warning("skipping unusable checkpoint: %s", e)
            skipped.append(folder)
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
    found = first_intact(((r, m), c.path) for _, _, r, c, m in ranked)
    if found is None:
        raise RuntimeError("no intact checkpoint in any trial: cannot compute test metrics")
    (result, metrics), state, path, skipped = found
    tid = result.metrics.get("trial_id")
    info = {"trial": numbers.get(tid, 0), "trial_id": tid, "epoch": int(metrics.get("epoch", 0)),
            "path": path, "fallback": bool(skipped), "skipped": skipped}
    if skipped:
        log.warning("test metrics from %s (skipped %d unusable checkpoint(s))", path, len(skipped))
    return result, state, metrics, info
