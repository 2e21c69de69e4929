"""A sweep folder's `sweep.json`: read and checked in one place (for `tuner resume` and `tuner ui`).

The file is ours, but a user can point at any folder, and a sweep killed while writing it (or
edited by hand) leaves anything there; every problem is one line naming the file.
"""

from __future__ import annotations

import json
import os

from trainables import yamlio
from trainables.errors import TunerError

# key -> accepted types; what resume and ui read without a default
REQUIRED = {"spec_path": str, "output": str, "tracking_uri": str, "experiment_id": (str, int),
            "parent_run_id": str}
OPTIONAL = {"overrides": (dict, type(None)), "smoke": (bool, type(None)), "max_epochs": (int, type(None)),
            "study_name": (str, type(None)), "metric": (str, type(None)), "mode": (str, type(None)),
            "storage": (str, type(None))}


def read_sweep_meta(sweep_dir: str) -> dict:
    """sweep_dir/sweep.json as a dict with the keys above, or a one-line TunerError."""
    path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.isfile(path):
        raise TunerError(f"{sweep_dir}: not a tuner sweep folder (no sweep.json); pass the folder `tuner run` printed")
    text = yamlio.read_text(path, what="sweep metadata")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        line = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise TunerError(f"{path}{line}: not valid JSON ({getattr(e, 'msg', type(e).__name__)}); "
                         "was the sweep interrupted while writing it?") from None
    if not isinstance(meta, dict):
        raise TunerError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key, types in {**REQUIRED, **OPTIONAL}.items():
        if key not in meta and key in OPTIONAL:
            continue
        if key not in meta:
            raise TunerError(f"{path}: {key}: missing; this file is not from `tuner run` (or was edited)")
        if not isinstance(meta[key], types) or (isinstance(meta[key], bool) and bool not in _tuple(types)):
            raise TunerError(f"{path}: {key}: unexpected value of type {type(meta[key]).__name__}")
    return meta


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)
