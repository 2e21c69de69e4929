"""Issue 17: one score and one stop reason per trial, wherever a user looks: MLflow (children's
best_<metric>, the parent's best_trial tags), Optuna (study best, user attrs), trials.csv,
summary.json and the printed summary, on one sweep where ASHA stops trials and one errors."""

import hashlib
import json
import math
import os

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuner import outcome
from tuner import spec as specmod

pytestmark = pytest.mark.ray

M = "val_ndcg_10"
SPEC = {
    "name": "truth", "model": "bpr_mf", "metric": {"name": M, "mode": "max"},
    "data": {"synthetic": {"n_users": 150, "n_items": 80, "mean_length": 10, "seed": 1}},
    "fixed": {"epochs": 4, "batch_size": 256, "loss": "bpr"},
    # lr 1e30 makes the loss non-finite at once: that trial errors; the searched seed keeps two
    # trials with the same lr from tying (the best trial must be unique to compare it)
    "space": {"lr": {"type": "categorical", "choices": [0.003, 0.01, 0.03, 1.0e+30]},
              "seed": {"type": "int", "low": 0, "high": 10000}},
    "search": {"samples": 8, "concurrency": 2, "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
}


def _reason(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    from tuner import sweep

    tmp = tmp_path_factory.mktemp("truth")
    path = tmp / "truth.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    spec = specmod.load(str(path))
    res = sweep.run(spec, output=str(tmp / "out"), verbose=0)
    table = pd.read_csv(os.path.join(res.sweep_dir, "trials.csv"))
    summary = json.load(open(os.path.join(res.sweep_dir, "summary.json")))
    return spec, res, table, summary


def test_the_sweep_has_what_the_checks_need(swept):
    _, _, table, _ = swept
    assert (table["status"] == "errored").sum() >= 1, "no trial errored: change the seed"
    assert (table["status"] == "stopped_early").any(), "ASHA stopped nothing: test too weak"
    assert (table.loc[table["status"] == "stopped_early", "stop_reason"] == "asha").all()


def test_files_and_printed_summary_agree(swept):
    spec, res, table, summary = swept
    best = table.iloc[0]
    assert summary["test_checkpoint"]["trial"] == best["trial"]
    assert summary["best_val"][M] == pytest.approx(best[f"best_{M}"])
    assert summary["best_epoch"] == int(summary["best_val"]["epoch"])
    for _, row in table.iterrows():  # summary.json's reason is trials.csv's stop reason (else status)
        assert summary["reasons"][str(int(row["trial"]))] == (_reason(row["stop_reason"]) or row["status"])
    printed = outcome.render(spec, res, top=len(table))
    lines = {ln.split()[0]: ln for ln in printed.splitlines() if ln.split() and ln.split()[0].isdigit()}
    for _, row in table.iterrows():
        assert _reason(row["stop_reason"])[:30] in lines[str(int(row["trial"]))]
    assert f"best validation (epoch {summary['best_epoch']})" in printed
    best_yaml = yaml.safe_load(open(os.path.join(res.sweep_dir, "best_config.yaml")))
    assert best_yaml["fixed"]["epochs"] == summary["best_epoch"]
    complete = int((table["status"] == "completed").sum())
    if complete < 8:  # tuner.importance.MIN_COMPLETE_TRIALS: one line saying why not
        assert f"importance: not computed ({complete} complete trial(s)" in printed


def test_analyze_agrees(swept):
    from tuner.analyze import analyze, render

    _, res, table, _ = swept
    a = analyze(res.sweep_dir, out_dir=os.path.join(res.sweep_dir, "analysis"))
    mine = {int(r["trial"]): (_reason(r["stop_reason"]), r["status"]) for _, r in table.iterrows()}
    theirs = {int(r["trial"]): (_reason(r["stop_reason"]), r["status"]) for _, r in a.table.iterrows()}
    assert theirs == mine
    assert list(a.table["trial"])[0] == int(table.iloc[0]["trial"])
    assert "importance" in render(a)


def test_mlflow_agrees(swept):
    spec, res, table, summary = swept
    client = MlflowClient(res.tracking_uri)
    exp = client.get_experiment(res.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    kids = client.search_runs([res.experiment_id], "tags.`tuner.trial_id` != ''",
                              order_by=[f"metrics.best_{M} DESC"])
    assert len(kids) == len(table)
    scored = table[table[f"best_{M}"].notna()]
    ranked = [r for r in kids if f"best_{M}" in r.data.metrics]
    assert [r.data.metrics[f"best_{M}"] for r in ranked] == pytest.approx(list(scored[f"best_{M}"]))
    by_number = {int(r.data.tags["tuner.trial_number"]): r for r in kids}
    for _, row in table.iterrows():
        run = by_number[int(row["trial"])]
        assert run.data.tags.get("stop_reason", "") == _reason(row["stop_reason"])
        assert run.data.tags["status"] == row["status"]
        assert run.info.run_name.startswith(f"trial-{int(row['trial']):03d} ")
    best_run = by_number[int(table.iloc[0]["trial"])]
    assert ranked[0].info.run_id == best_run.info.run_id
    assert best_run.data.metrics["best_epoch"] == summary["best_epoch"]
    parent = client.get_run(res.parent_run_id).data.tags
    assert parent["best_trial_run_id"] == best_run.info.run_id
    assert parent["best_trial_name"] == best_run.info.run_name
    assert parent["tuner.sweep_status"] == "completed" and "status" not in parent
    assert parent["tuner.role"] == "sweep"
    assert parent["mlflow.source.name"] == os.path.abspath(spec.path)
    assert parent["tuner.spec_sha256"] == hashlib.sha256(open(spec.path, "rb").read()).hexdigest()
    assert not client.search_runs([res.experiment_id], "tags.status = 'completed' and tags.`tuner.role` = 'sweep'")


def test_optuna_agrees(swept):
    spec, res, table, summary = swept
    client = MlflowClient(res.tracking_uri)
    study = optuna.load_study(study_name=res.extra["study_name"], storage=res.extra["optuna_storage"])
    assert study.metric_names == [M]
    rows = {int(r["trial"]): r for _, r in table.iterrows()}
    State = optuna.trial.TrialState
    for t in study.trials:
        row = rows[t.number]  # one numbering: Optuna's number is the trial's number everywhere
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.run_name == t.user_attrs["mlflow_run_name"]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert t.user_attrs["ray_trial_id"] == row["trial_id"]
        if t.state == State.FAIL:
            assert row["status"] == "errored"
            continue
        assert sorted(t.intermediate_values) == list(range(1, int(row["epochs_run"]) + 1))
        if t.state == State.COMPLETE:
            assert t.value == pytest.approx(row[f"best_{M}"]) and row["status"] == "completed"
        else:
            assert t.state == State.PRUNED and t.user_attrs["stop_reason"] == row["stop_reason"]
    best = table.iloc[0]
    best_trial = study.trials[int(best["trial"])]
    assert max(best_trial.intermediate_values.values()) == pytest.approx(best[f"best_{M}"])
    if best_trial.state == State.COMPLETE:  # the usual case: the study's best is the tool's
        assert study.best_trial.number == best_trial.number
        assert study.best_value == pytest.approx(summary["best_val"][M])
    else:  # README: a best trial ASHA stopped is PRUNED, and Optuna's best is among COMPLETE ones
        assert best_trial.state == State.PRUNED and study.best_value <= best[f"best_{M}"]
