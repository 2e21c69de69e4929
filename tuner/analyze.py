"""`tuner analyze RUN`: read a finished sweep back from MLflow (and its Optuna study) and report.

RUN is a sweep folder (holding sweep.json) or an MLflow parent run id. Everything comes from the
tracking store, so a sweep run on another machine against a shared server can be analysed here.
Writes <out>/trials.csv, the PNG plots and report.html, attaches them to the parent run under
`analysis/`, and replays the pathology checks offline on every trial's curves.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.diagnose import DiagnoseConfig, first_diagnosis
from tuner.importance import MIN_COMPLETE_TRIALS, Importances, importance
from analysis.report import write_report
from tuner import termtable, tracking
from trainables.errors import TunerError

HISTORY_KEYS = ("train_loss", "logit_bound", "logit_scale", "grad_ratio")


@dataclass
class Analysis:
    table: pd.DataFrame
    paths: dict[str, str]
    importance: dict[str, float]
    metric: str
    mode: str
    parent: Any
    out_dir: str


def _locate(run: str, tracking_uri: str | None) -> tuple[str, str, dict]:
    """(tracking uri, parent run id, sweep.json or {}) for a sweep folder or a run id."""
    meta_path = os.path.join(run, "sweep.json")
    if os.path.isfile(meta_path):
        from tuner.sweepdir import read_sweep_meta

        meta = read_sweep_meta(run)
        return tracking_uri or meta["tracking_uri"], meta["parent_run_id"], meta
    if os.path.exists(run):
        raise TunerError(f"{run}: not a tuner sweep folder (no sweep.json)")
    return tracking_uri or tracking.default_uri("runs"), run, {}


def analyze(run: str, *, tracking_uri: str | None = None, out_dir: str | None = None,
            cfg: DiagnoseConfig = DiagnoseConfig()) -> Analysis:
    uri, parent_id, meta = _locate(run, tracking_uri)
    tracking.check_reachable(uri)
    db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if db is not None and not os.path.isfile(db):  # don't create an empty store by looking
        raise TunerError(f"{run}: no MLflow database at {db}; pass --tracking-uri")
    client = MlflowClient(uri)
    try:
        parent = client.get_run(parent_id)
    except Exception:  # noqa: BLE001 - unknown id, or not a run at all
        raise TunerError(f"{run}: no MLflow run {parent_id!r} in {tracking.redact(uri)}") from None
    if parent.data.tags.get("tuner.role") != "sweep":
        raise TunerError(f"{run}: run {parent_id} is not a tuner sweep (no tuner.role=sweep tag)")
    metric = parent.data.params.get("metric", "val_ndcg_10")
    mode = parent.data.params.get("mode", "max")
    reference = parent.data.metrics.get(f"popularity_valid_{metric.removeprefix('val_')}")  # as the stopper saw it
    searched = [k for k in parent.data.params.get("searched", "-").split(",") if k and k != "-"]
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10000)

    rows, histories = [], {}
    for r in kids:
        tags = r.data.tags
        number = int(tags.get("tuner.trial_number", 0))
        hist = _history(client, r.info.run_id, [metric, *HISTORY_KEYS])
        histories[number] = hist
        values = hist[metric] if metric in hist else pd.Series(dtype=float)
        diag = first_diagnosis(hist, metric, mode, cfg, reference) if len(hist) else None
        row = {
            "trial": number, "run_id": r.info.run_id, "status": tags.get("status", "?"),
            "stop_reason": tags.get("stop_reason", ""), "epochs_run": int(tags.get("epochs_run", len(hist))),
            f"best_{metric}": (values.max() if mode == "max" else values.min()) if len(values) else float("nan"),
            f"last_{metric}": values.iloc[-1] if len(values) else float("nan"),
            "diagnosis": str(diag) if diag else "",
        }
        row.update({k: _param(r.data.params.get(k)) for k in searched})
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last").reset_index(drop=True)

    imp = _importance(parent.data.tags.get("optuna.study") or (meta or {}).get("study_name"), meta, metric)

    out_dir = out_dir or (os.path.join(run, "analysis") if meta else os.path.join("runs", f"analysis-{parent_id}"))
    os.makedirs(out_dir, exist_ok=True)
    table.to_csv(os.path.join(out_dir, "trials.csv"), index=False)
    paths = write_report(out_dir, table, histories, metric, mode, searched, imp,
                         f"{parent.info.run_name}: {len(table)} trials")
    paths["csv"] = os.path.join(out_dir, "trials.csv")
    client.log_artifacts(parent_id, out_dir, "analysis")
    return Analysis(table, paths, imp, metric, mode, parent, out_dir)


def _importance(study_name: str | None, meta: dict | None, metric: str) -> Importances:
    storage = _study_storage(meta)
    if not (study_name and storage):
        return Importances(reason="no Optuna study found for this sweep")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception as e:  # noqa: BLE001 - a shared database that is gone or refuses us: no importance
        return Importances(reason=f"Optuna study {study_name!r} not readable: {' '.join(str(e).split())[:120]}")
    return importance(study, metric, method="ped_anova", min_trials=MIN_COMPLETE_TRIALS)


def _study_storage(meta: dict | None) -> str | None:
    """The sweep's search.storage (as sweep.json keeps it: without a password, which the
    environment supplies), else its optuna.db beside mlflow.db when that exists."""
    if not meta:
        return None
    if meta.get("optuna_storage"):
        return meta["optuna_storage"]
    db = os.path.join(meta.get("output", ""), "optuna.db")
    return f"sqlite:///{os.path.abspath(db)}" if os.path.isfile(db) else None


def _history(client: MlflowClient, run_id: str, keys) -> pd.DataFrame:
    cols: dict[str, dict[int, float]] = {}
    for k in keys:
        for m in client.get_metric_history(run_id, k):
            cols.setdefault(k, {})[m.step] = m.value
    if not cols:
        return pd.DataFrame({"epoch": []})
    df = pd.DataFrame(cols).sort_index()
    df.index.name = "epoch"
    return df.reset_index()


def _param(v: str | None) -> Any:
    if v is None or v == "None":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def render(a: Analysis) -> str:
    cols = [c for c in a.table.columns if c != "run_id"]
    lines = [f"== {a.parent.info.run_name}: {len(a.table)} trials  "
             f"({', '.join(f'{v} {k}' for k, v in a.table['status'].value_counts().items())})"]
    lines.append(termtable.render(a.table[cols]))  # 120 columns; the CSV it writes has everything
    test = {k: v for k, v in a.parent.data.metrics.items() if k.startswith("test_")}
    if test:
        lines.append("best trial on test: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(test.items())))
    reason = getattr(a.importance, "reason", "")
    if a.importance:
        lines.append(f"importance ({reason}): " + ", ".join(f"{k} {v:.2f}" for k, v in a.importance.items()))
    elif reason:
        lines.append(f"importance: not computed ({reason})")
    lines.append(f"written: {a.out_dir}/ (trials.csv, report.html, *.png); attached to MLflow run "
                 f"{a.parent.info.run_id} under analysis/")
    # one table row per line; the prose lines wrap at the table's width
    return "\n".join(textwrap.fill(ln, termtable.WIDTH, subsequent_indent="  ") if i > 1 else ln
                     for i, ln in enumerate(lines))
