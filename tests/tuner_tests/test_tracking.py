"""tuner/tracking.py and tuner/searcher.py on their own (no Ray cluster): what a trial's MLflow run and
Optuna trial say when Tune ends it."""

from __future__ import annotations

import types

import optuna
import pytest
from helpers import tracking_uri
from mlflow.tracking import MlflowClient
from ray import tune

from tuner import raycompat, recover, tracking
from tuner.searcher import PrunedAwareOptunaSearch

EPOCHS = 8


@pytest.fixture
def sweep(tmp_path):
    """(tracking uri, client, experiment id, parent run id): a sweep's MLflow side, as the driver makes it."""
    uri = tracking_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("t")
    return uri, client, exp, client.create_run(exp).info.run_id


def fake_trial(tid: str, config: dict, epoch: int):
    return types.SimpleNamespace(trial_id=tid, config=config,
                                 last_result={"epoch": epoch, "val_ndcg_10": 0.1, "training_iteration": epoch})


def test_a_trial_asha_stops_right_after_a_ctrl_c_is_stopped_early_everywhere(sweep):
    """Tune finishes its current step after a Ctrl+C; a trial ASHA stops in that step is saved
    TERMINATED and never runs again on `tuner resume`. Its MLflow run must say stopped_early /
    FINISHED and its Optuna trial PRUNED (before: 'interrupted' / KILLED for good, Optuna RUNNING;
    CI caught it once in test_asha_promote_sweep_interrupted_twice...)."""
    uri, client, exp, parent = sweep
    searcher = PrunedAwareOptunaSearch(space={"lr": tune.loguniform(1e-4, 1e-1)}, metric="val_ndcg_10", mode="max",
                                       epochs_of=lambda c: EPOCHS, storage=optuna.storages.InMemoryStorage(),
                                       study_name="s")
    runs = tracking.TrialRuns(uri, exp, parent, model="bpr_mf", dataset="d", spec_file="s.yaml", searched=["lr"],
                              epochs_of=lambda c: EPOCHS, rungs=(1, 2, 4), metric="val_ndcg_10")
    runs.searcher = searcher
    config = searcher.suggest("t0")
    trial = fake_trial("t0", config, 2)
    runs.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        result = {"epoch": epoch, "val_ndcg_10": 0.1 * epoch}
        searcher.on_trial_result("t0", result)
        runs.on_trial_result(0, [], trial, result)
    recover.INTERRUPTED.set()
    try:
        searcher.on_trial_complete("t0", result=trial.last_result)
        runs.on_trial_complete(0, [], trial)
    finally:
        recover.INTERRUPTED.clear()
    run = client.get_run(runs.runs["t0"])
    assert (run.info.status, run.data.tags["status"], run.data.tags["epochs_run"]) == ("FINISHED", "stopped_early", "2")
    assert runs.final["t0"] == "stopped_early"
    (ot,) = raycompat.optuna_study(searcher).get_trials()
    assert ot.state == optuna.trial.TrialState.PRUNED and ot.intermediate_values == {1: 0.1, 2: 0.2}


def test_close_running_marks_only_the_runs_a_ctrl_c_left_open(sweep):
    uri, client, exp, parent = sweep
    runs = tracking.TrialRuns(uri, exp, parent, model="bpr_mf", dataset="d", spec_file="s.yaml", searched=["lr"],
                              epochs_of=lambda c: EPOCHS)
    done, cut = fake_trial("a", {"lr": 0.01}, EPOCHS), fake_trial("b", {"lr": 0.02}, 3)
    for t in (done, cut):
        runs.on_trial_start(0, [], t)
    runs.on_trial_complete(0, [], done)
    runs.close_running()
    status = {t: (client.get_run(r).info.status, client.get_run(r).data.tags["status"]) for t, r in runs.runs.items()}
    assert status == {"a": ("FINISHED", "completed"), "b": ("KILLED", "interrupted")}
