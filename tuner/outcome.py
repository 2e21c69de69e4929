"""What a sweep leaves behind, whatever happened: trials.csv, summary.json and a closed MLflow parent.

Split from sweep.py so that every ending (finished, interrupted, every trial failed) writes the same
files the same way: once the first trial has started, a sweep folder always has a trials table.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from typing import Any, Mapping

import pandas as pd

from analysis.trials import trials_table
from tuner import termtable, tracking
from tuner.provenance import SWEEP_STATUS
from tuner.stopper import reaches

# MLflow parent status for each way a sweep can end without a best trial
PARENT_STATUS = {"interrupted": "KILLED", "all_failed": "FAILED", "failed": "FAILED"}


class AllFailed(Exception):
    """Every trial of the sweep failed: the files are written, there is no best trial to test."""

    def __init__(self, sweep_dir: str, counts: Mapping[str, int]):
        self.sweep_dir = sweep_dir
        self.counts = dict(counts)
        detail = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        super().__init__(f"every trial failed ({detail}); see {os.path.join(sweep_dir, 'trials.csv')}")


def restarts_of(trial) -> int:
    """Restarts actually made: a failure followed by the trial running on. The failure that ended an
    errored trial was not followed by a restart (max_failures 0: one failure, zero restarts)."""
    failures = int(getattr(trial.run_metadata, "num_failures", 0) or 0)
    return max(0, failures - 1) if trial.status == "ERROR" else failures


def _lost_rows(runs_cb, lost: list[str], metric: str) -> list[dict[str, Any]]:
    """Rows for trials that only MLflow knows (the driver died before Ray saved them)."""
    from tuner.recover import LOST_REASON

    return [{"trial": runs_cb.numbers.get(tid, 0), "trial_id": tid, "status": "lost", "restarts": 0,
             "stop_reason": LOST_REASON, "epochs_run": runs_cb.last_step.get(tid, 0),
             f"best_{metric}": float("nan"), f"last_{metric}": float("nan"), "error": ""} for tid in lost]


def build_table(spec, results: list, trials: list, runs_cb, epochs_of, lost: list[str] = ()) -> pd.DataFrame:
    """trials.csv: one row per trial Ray knows, plus one per lost trial, statuses as in MLflow."""
    metric, mode = spec.metric.name, spec.metric.mode
    searched = tuple(p.name for p in spec.space)
    table = trials_table(results, metric, mode, epochs_of, searched, runs_cb.numbers,
                         configs={t.trial_id: t.config for t in trials})
    if not len(table):
        table = pd.DataFrame(columns=["trial", "trial_id", "status", "epochs_run", f"best_{metric}",
                                      f"last_{metric}", "error", *searched])
    restarts = {t.trial_id: restarts_of(t) for t in trials}
    table.insert(3, "restarts", table["trial_id"].map(restarts).fillna(0).astype(int))
    reasons = {r.metrics.get("trial_id"): r.metrics.get("stop_reason") or "" for r in results if r.metrics}
    table.insert(4, "stop_reason", table["trial_id"].map(reasons).fillna(""))
    table.loc[table["stop_reason"] != "", "status"] = "pathology"
    devices = {r.metrics.get("trial_id"): r.metrics.get("device") for r in results if r.metrics}
    if any(d and d != "cpu" for d in devices.values()):  # a sweep given GPUs: where each trial trained
        table.insert(5, "device", table["trial_id"].map(devices).fillna(""))
    # the stop reason MLflow shows (`asha` for a trial ASHA stopped): one truth for every file
    logged = getattr(runs_cb, "reasons", {})
    for i, tid in table["trial_id"].items():
        if logged.get(tid):
            table.loc[i, "stop_reason"] = logged[tid]
    # the MLflow callback saw how each trial ended (interrupted, stopped by ASHA, ...): one truth
    final = getattr(runs_cb, "final", {})
    for i, tid in table["trial_id"].items():
        if final.get(tid) in ("interrupted", "lost"):
            table.loc[i, "status"] = final[tid]
    # errored trials: the same reason MLflow shows ('non-finite loss at epoch 1, step 3')
    why = {t.trial_id: tracking.error_reason(t) for t in trials if t.status == "ERROR"}
    errored = table["trial_id"].isin(list(why))
    table.loc[errored, "stop_reason"] = table.loc[errored, "trial_id"].map(why)
    if lost:
        table = pd.concat([table, pd.DataFrame(_lost_rows(runs_cb, list(lost), metric))], ignore_index=True)
    return table


def write_files(sweep_dir: str, table: pd.DataFrame, summary: Mapping[str, Any]) -> None:
    table.to_csv(os.path.join(sweep_dir, "trials.csv"), index=False)
    with open(os.path.join(sweep_dir, "summary.json"), "w") as fh:
        json.dump(dict(summary), fh, indent=2, default=str)


def base_summary(ctx, table: pd.DataFrame, status: str) -> dict[str, Any]:
    """The part of summary.json every ending has; `reasons`: why each trial ended as it did."""
    reasons = {str(int(r["trial"])): str(r.get("stop_reason") or r.get("error") or r["status"])
               for _, r in table.iterrows()}
    return {
        "status": status, "spec": os.path.abspath(ctx.spec.path), "dataset": ctx.data.name,
        "wall_seconds": ctx.wall(), "trials": len(table),
        "status_counts": table["status"].value_counts().to_dict() if len(table) else {},
        "reasons": reasons, "popularity": ctx.base,
        "tracking_uri": tracking.redact(ctx.uri), "parent_run_id": ctx.pid,
    }


def close_parent(client, pid: str, status: str, sweep_dir: str | None = None) -> None:
    """End the parent run of a sweep that has no best trial (interrupted, every trial failed)."""
    try:
        client.set_tag(pid, SWEEP_STATUS, status)
        if sweep_dir:
            for f in ("trials.csv", "summary.json"):
                if os.path.isfile(os.path.join(sweep_dir, f)):
                    client.log_artifact(pid, os.path.join(sweep_dir, f))
    finally:
        client.set_terminated(pid, PARENT_STATUS.get(status, "FAILED"))


def failure_counts(table: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in table["status"].value_counts().items()}


def render_compact(spec, res) -> str:
    """The summary `--quiet` prints, in 15 lines: the top 3 trials, no blank lines, no re-run line and no
    MLflow run ids (summary.json has them)."""
    lines = render(spec, res, top=3).split("\n")
    return "\n".join(ln for ln in lines if ln.strip() and not ln.startswith(("re-run:", "           (experiment")))


def render(spec, res, top: int = 5) -> str:
    """The end-of-sweep summary printed by `tuner run`."""
    lines = [f"\n== {spec.name}: {len(res.table)} trials in {res.wall_seconds:.0f}s  "
             f"({', '.join(f'{v} {k}' for k, v in res.table['status'].value_counts().items())})"]
    used = int(res.table["epochs_run"].sum())
    if spec.search.epoch_budget:  # the sweep's other end: how much of its budget it ran
        lines.append(f"epoch budget: {used} of {spec.search.epoch_budget} trial-epochs run")
    if spec.search.stop_at is not None:
        hit = any(reaches(float(b), spec.search.stop_at, spec.metric.mode) for b in res.table[f"best_{spec.metric.name}"])
        lines.append(f"stop_at {spec.search.stop_at:g}: {'reached' if hit else 'not reached'}, {used} trial-epochs run")
    cols = [c for c in res.table.columns if c not in ("trial_id", "error")]
    lines.append(termtable.render(res.table[cols].head(top)))  # 120 columns; trials.csv has everything
    # 4 significant digits on the terminal (best_config.yaml has the exact values)
    shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in res.best_config.items()}
    lines.append(textwrap.fill(f"best config: {json.dumps(shown, default=str)}", termtable.WIDTH,
                               initial_indent="\n", subsequent_indent="  "))
    ks = spec.eval.ks
    shown = spec.model_entry().headline(ks)  # hr_10, ndcg_10, ... for ranking; None: all but per-class
    if shown:
        fmt_row = lambda d: "  ".join(f"{k.replace('_', '@')} {d.get(k, float('nan')):.4f}" for k in shown)
    else:  # e.g. classification: macro_f1, accuracy, ...
        fmt_row = lambda d: "  ".join(f"{k} {v:.4f}" for k, v in d.items() if k != "epoch" and not k.startswith("f1_class"))
    lines.append(f"best validation (epoch {int(res.best_val.get('epoch', 0))}): "
                 + fmt_row({k.removeprefix('val_'): v for k, v in res.best_val.items()}))
    lines.append(f"test, best trial:      {fmt_row(res.test)}")
    if res.baseline:
        lines.append(f"test, popularity:      {fmt_row(res.baseline['test'])}")
    imp = res.extra.get("importance")
    if imp:
        lines.append(f"importance ({getattr(imp, 'reason', '')}): " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    elif getattr(imp, "reason", ""):  # too few complete trials, or nothing searched: say so
        lines.append(f"importance: not computed ({imp.reason})")
    lines.append(f"\noutputs:   {res.sweep_dir}/  (trials.csv, best_config.yaml, summary.json, report/report.html)")
    lines.append(f"re-run:    tuner run {os.path.join(res.sweep_dir, 'best_config.yaml')}")
    if res.tracking_uri.startswith("sqlite:"):
        # tuner ui opens the training-runs view sorted by the trial score; MLflow's own UI opens GenAI's
        lines.append(f"MLflow UI: tuner ui {res.sweep_dir}   (or mlflow ui --backend-store-uri {res.tracking_uri})\n"
                     f"           (experiment {res.experiment_id}, parent run {res.parent_run_id})")
    else:
        lines.append(f"MLflow:    {tracking.redact(res.tracking_uri)}  experiment {res.experiment_id}, "
                     f"parent run {res.parent_run_id}")
    if res.extra.get("optuna_storage"):
        lines.append(f"Optuna:    optuna-dashboard {tracking.redact(res.extra['optuna_storage'])}   (study {res.extra['study_name']})")
    if res.extra.get("failed_mlflow_writes"):
        lines.append(f"warning: {res.extra['failed_mlflow_writes']} MLflow writes failed and were skipped")
    return "\n".join(lines)
