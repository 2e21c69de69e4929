"""One row per trial of a finished sweep: config, status, epochs run, best and last metric."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd


def status_of(error: bool, epochs_run: int, planned: int) -> str:
    if error:
        return "errored"
    return "completed" if epochs_run >= planned else "stopped_early"  # sweep.py marks pathology stops


def trials_table(
    results: list[Any],
    metric: str,
    mode: str,
    epochs_of: Callable[[Mapping[str, Any]], int],
    searched: tuple[str, ...] = (),
    numbers: Mapping[str, int] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """`results`: Ray Tune Result objects (ResultGrid iterates them). A Result's config comes from its
    last result, which a trial restored by `tuner resume` and ended before it reported again lacks:
    `configs` (trial id -> the trial's own config) fills it in."""
    rows = []
    for r in results:
        hist = r.metrics_dataframe
        values = hist[metric] if hist is not None and metric in hist else pd.Series(dtype=float)
        last = r.metrics or {}
        tid = last.get("trial_id") or (r.path.rsplit("_", 3)[0] if r.path else "")
        epochs_run = int(last.get("epoch", 0) or 0)
        config = r.config or (configs or {}).get(tid) or {}
        row = {
            "trial": (numbers or {}).get(tid, 0),
            "trial_id": tid,
            "status": status_of(r.error is not None, epochs_run, epochs_of(config)),
            "epochs_run": epochs_run,
            f"best_{metric}": (values.max() if mode == "max" else values.min()) if len(values) else float("nan"),
            f"last_{metric}": values.iloc[-1] if len(values) else float("nan"),
            "error": (str(r.error).strip().splitlines() or [""])[-1][:200] if r.error else "",
        }
        row.update({k: config.get(k) for k in searched})
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    return df
