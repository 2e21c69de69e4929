"""The end of a sweep that has a best trial: test metrics, best_config.yaml, the parent's links.

Split from sweep.py. The best trial and its score are those of trials.csv: the best validation
value over the epochs a trial ran (the checkpoint test metrics come from), the same value the
children log as best_<metric> and Optuna holds for a COMPLETE trial.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping

import pandas as pd
import torch
from mlflow.entities import Metric, Param, RunTag

from tuner.importance import MIN_COMPLETE_TRIALS, importance
from analysis.report import write_report
from trainables import loop
from tuner import checkpoints, outcome, raycompat
from tuner import spec as specmod
from trainables.data import Dataset
from tuner.provenance import SWEEP_STATUS
from tuner.spec import Spec

log = logging.getLogger(__name__)


def evaluate_state(spec: Spec, config: Mapping[str, Any], data: Dataset, state: Mapping[str, Any], split: str) -> dict[str, float]:
    """Rebuild a trial's model from its checkpoint state and rank `split` (on the driver)."""
    entry = spec.model_entry()
    cfg = entry.make_config(config)
    recipe = entry.recipe(cfg, data, torch.device("cpu"))
    recipe.load_state_dict(state)
    return loop.evaluate(recipe, split, spec.eval.ks, spec.eval.batch_users)


def best_config_yaml(spec: Spec, config: Mapping[str, Any], best_epoch: int, planned: int) -> str:
    """best_config.yaml: the best trial's knobs with `epochs` = the epoch of its best checkpoint,
    so that re-running it trains as long as the result it reproduces."""
    fixed = {**config, "epochs": int(best_epoch)} if best_epoch > 0 else dict(config)
    text = specmod.dump_fixed(spec, fixed)
    note = (f"  # the epoch of the best checkpoint; the sweep ran this trial up to {planned} "
            f"(set {planned} to train as long)")
    return "\n".join(line + note if line == f"  epochs: {int(best_epoch)}" else line
                     for line in text.splitlines()) + "\n"


def best_links(client, pid: str, runs_cb, used: Mapping[str, Any]) -> list[RunTag]:
    """Parent tags pointing at the best trial's child run (by id and by the name the UI shows)."""
    tags = [RunTag("best_trial", str(used.get("trial", "")))]
    run_id = runs_cb.runs.get(used.get("trial_id"))
    if run_id:
        tags.append(RunTag("best_trial_run_id", run_id))
        run = runs_cb.safe(client.get_run, run_id)
        if run is not None:
            tags.append(RunTag("best_trial_name", run.info.run_name))
    return tags


def sweep_importance(searcher, metric: str):
    """PED-ANOVA on COMPLETE trials, as optuna-dashboard's default; only from MIN_COMPLETE_TRIALS."""
    if searcher is None:
        return importance(None, metric)
    return importance(raycompat.optuna_study(searcher), metric, method="ped_anova", min_trials=MIN_COMPLETE_TRIALS)


def complete(ctx, searcher, results: list, table: pd.DataFrame, runs_cb, epochs_of):
    """(best_config, best_val, test, wall, used, importance, report paths) and every file written."""
    spec, client, pid = ctx.spec, ctx.client, ctx.pid
    best, state, metrics, used = checkpoints.best_intact(results, spec.metric.name, spec.metric.mode, runs_cb.numbers)
    best_config = {k: v for k, v in best.config.items()}
    best_val = {k: float(v) for k, v in metrics.items() if str(k).startswith("val_") and isinstance(v, (int, float))}
    best_val["epoch"] = float(metrics.get("epoch", 0))
    test = evaluate_state(spec, best_config, ctx.data, state, "test")
    wall = ctx.wall()
    with open(os.path.join(ctx.sweep_dir, "best_config.yaml"), "w") as fh:
        fh.write(best_config_yaml(spec, best_config, int(best_val["epoch"]), epochs_of(best_config)))
    summary = {**outcome.base_summary(ctx, table, "completed"), "best_config": best_config,
               "best_epoch": int(best_val["epoch"]), "best_val": best_val, "test": test,
               "test_checkpoint": used, "wall_seconds": wall}
    outcome.write_files(ctx.sweep_dir, table, summary)
    now = int(time.time() * 1000)
    client.log_batch(pid,
                     metrics=[Metric(f"test_{k}", v, now, 0) for k, v in test.items()]
                     + [Metric(f"best_val_{k.removeprefix('val_')}", v, now, 0) for k, v in best_val.items()]
                     + [Metric("wall_seconds", wall, now, 0)],
                     params=[Param(f"best.{k}", str(v)[:500]) for k, v in best_config.items()],
                     tags=[RunTag(SWEEP_STATUS, "completed"), *best_links(client, pid, runs_cb, used)])
    for f in ("trials.csv", "best_config.yaml", "summary.json"):
        client.log_artifact(pid, os.path.join(ctx.sweep_dir, f))
    imp = sweep_importance(searcher, spec.metric.name)
    paths = write_sweep_report(ctx, table, results, runs_cb, imp)
    return best_config, best_val, test, wall, used, imp, paths


def write_sweep_report(ctx, table: pd.DataFrame, results: list, runs_cb, imp) -> dict:
    spec = ctx.spec
    searched = tuple(p.name for p in spec.space)
    histories = {runs_cb.numbers.get(r.metrics.get("trial_id"), i): r.metrics_dataframe
                 for i, r in enumerate(results) if r.metrics_dataframe is not None and r.metrics}
    try:
        paths = write_report(os.path.join(ctx.sweep_dir, "report"), table, histories, spec.metric.name,
                             spec.metric.mode, searched, imp, f"{spec.name}: {len(table)} trials")
        ctx.client.log_artifacts(ctx.pid, os.path.join(ctx.sweep_dir, "report"), "report")
        return paths
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose the sweep's results
        log.warning("report failed: %s", e)
        return {}
