"""Faults that used to lose or corrupt a sweep's results (issue 18): Ctrl+C of a one-trial sweep,
a corrupt checkpoint, a driver killed with SIGKILL, two sweeps on one --output, every trial failing.

Subprocess scenarios run `python -m tuner` in their own process group (tests/faultkit.py), wait on
MLflow with a deadline, and kill the group (and the Ray it started) in `finally`."""

import json
import os
import signal

import optuna
import pandas as pd
import pytest
from faultkit import (corrupt, finish, mlflow_runs, checkpoint_of_epoch, parent_runs, stderr_of,
                      trial_dirs, trial_runs, tuner_process, wait_until)
from helpers import tracking_uri, write_spec
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.ray

DATA = {"synthetic": {"n_users": 1000, "n_items": 200, "mean_length": 10, "seed": 1}}
BASE = {"name": "f", "model": "bpr_mf", "metric": {"name": "val_ndcg_10", "mode": "max"}, "data": DATA,
        "fixed": {"epochs": 2, "loss": "bpr", "batch_size": 64}, "scheduler": {"type": "fifo"}}


def history(out, run_id) -> list[int]:
    client = MlflowClient(tracking_uri(out))
    return [m.step for m in client.get_metric_history(run_id, "val_ndcg_10")]


def study_states(out, sweep_dir) -> list:
    meta = json.load(open(os.path.join(sweep_dir, "sweep.json")))
    study = optuna.load_study(study_name=meta["study_name"], storage=f"sqlite:///{out / 'optuna.db'}")
    return [t.state for t in study.trials]


def test_sigint_one_trial_fifo_then_resume_past_a_corrupt_checkpoint(tmp_path):
    """Defects 5 and 1: Ctrl+C of a one-trial FIFO sweep is an interruption (exit 130, resume line,
    parent KILLED, trial `interrupted`, no best_config.yaml); its newest checkpoint is then corrupted
    and `tuner resume` falls back to the previous one and finishes; a second resume with the best
    checkpoint corrupted re-trains nothing and takes test metrics from the next intact checkpoint."""
    epochs = 12
    body = {**BASE, "name": "one", "fixed": {"epochs": epochs, "loss": "bpr", "batch_size": 64},
            "space": {"lr": {"type": "categorical", "choices": [0.01]}},  # a study, one config
            "search": {"samples": 1, "concurrency": 1, "seed": 0}}
    out = tmp_path / "out"
    with tuner_process(["run", write_spec(tmp_path, body), "--output", str(out), "--quiet"], tmp_path, name="run") as p:
        wait_until(lambda: int(trial_runs(out)[0].data.tags.get("epochs_run", 0)) >= 3, 150, p, "3 epochs logged")
        p.send_signal(signal.SIGINT)
        assert finish(p, 120) == 130, stderr_of(tmp_path, "run")[-3000:]
    err = stderr_of(tmp_path, "run")
    hint = [line for line in err.splitlines() if "tuner resume " in line]
    assert hint, err[-3000:]
    sweep_dir = hint[-1].split("tuner resume ")[-1].strip()
    assert not os.path.exists(os.path.join(sweep_dir, "best_config.yaml"))
    (parent,) = parent_runs(out)
    assert parent.info.status == "KILLED" and parent.data.tags["tuner.sweep_status"] == "interrupted"
    (kid,) = trial_runs(out)
    assert kid.info.status == "KILLED" and kid.data.tags["status"] == "interrupted"
    assert "stop_reason" not in kid.data.tags  # FIFO never stops a trial early: no `asha`
    table = pd.read_csv(os.path.join(sweep_dir, "trials.csv"))
    assert list(table["status"]) == ["interrupted"]
    assert json.load(open(os.path.join(sweep_dir, "summary.json")))["status"] == "interrupted"

    # the newest checkpoint Ray knows: that of the last result it processed (= the last epoch in
    # MLflow); a newer folder on disk may be one whose result the interrupt cut off
    cut = int(kid.data.tags["epochs_run"])
    (trial_dir,) = trial_dirs(sweep_dir)
    corrupt(os.path.join(checkpoint_of_epoch(trial_dir, cut), "state.pt"))
    with tuner_process(["resume", sweep_dir, "--quiet"], tmp_path, name="resume1") as p:
        assert finish(p, 180) == 0, stderr_of(tmp_path, "resume1")[-3000:]
    assert "already finished" not in stderr_of(tmp_path, "resume1")  # Optuna had not closed it early
    ran = [json.loads(line)["epoch"] for line in open(os.path.join(trial_dir, "result.json")) if line.strip()]
    assert ran.count(cut) == 2 and ran.count(1) == 1, ran  # went on from epoch cut - 1, not from scratch
    (kid,) = trial_runs(out)
    assert kid.info.status == "FINISHED" and kid.data.tags["status"] == "completed"
    assert history(out, kid.info.run_id) == list(range(1, epochs + 1))  # each epoch logged once
    assert study_states(out, sweep_dir) == [optuna.trial.TrialState.COMPLETE]  # agrees with MLflow
    summary = json.load(open(os.path.join(sweep_dir, "summary.json")))
    assert summary["status"] == "completed" and summary["test_checkpoint"]["fallback"] is False

    corrupt(os.path.join(summary["test_checkpoint"]["path"], "state.pt"))
    with tuner_process(["resume", sweep_dir, "--quiet"], tmp_path, name="resume2") as p:
        assert finish(p, 120) == 0, stderr_of(tmp_path, "resume2")[-3000:]
    assert "already finished" not in stderr_of(tmp_path, "resume2")
    assert history(out, kid.info.run_id) == list(range(1, epochs + 1))  # nothing re-trained
    again = json.load(open(os.path.join(sweep_dir, "summary.json")))
    used = again["test_checkpoint"]
    assert used["fallback"] is True and used["skipped"] == [summary["test_checkpoint"]["path"]]
    assert used["path"] != summary["test_checkpoint"]["path"] and used["trial"] == 0
    (parent,) = parent_runs(out)
    assert parent.info.status == "FINISHED" and parent.data.tags["tuner.sweep_status"] == "completed"


def test_sigterm_is_an_interruption_not_a_crash_dump(tmp_path):
    """SIGTERM (a job scheduler stopping the driver) ends a sweep as Ctrl+C does: exit 130, the
    resume line, the parent run KILLED. Ray's core worker installs a C++ crash handler for SIGTERM
    at ray.init, which printed a stack dump and killed the driver before cluster.start put ours back."""
    body = {**BASE, "name": "term", "fixed": {"epochs": 30, "loss": "bpr", "batch_size": 64},
            "space": {"lr": {"type": "categorical", "choices": [0.01]}}, "search": {"samples": 1, "concurrency": 1}}
    out = tmp_path / "out"
    with tuner_process(["run", write_spec(tmp_path, body), "--output", str(out), "--quiet"], tmp_path, name="run") as p:
        wait_until(lambda: int(trial_runs(out)[0].data.tags.get("epochs_run", 0)) >= 1, 150, p, "an epoch logged")
        p.send_signal(signal.SIGTERM)
        assert finish(p, 120) == 130, stderr_of(tmp_path, "run")[-3000:]
    err = stderr_of(tmp_path, "run")
    assert "SIGTERM received" not in err and "Traceback" not in err, err[-3000:]
    assert "Tuner.restore" not in err and "Failed to fetch metrics" not in err  # Ray's hints, not ours
    assert "tuner: interrupted; state saved. Resume with: tuner resume " in err
    (parent,) = parent_runs(out)
    assert parent.info.status == "KILLED" and parent.data.tags["tuner.sweep_status"] == "interrupted"


def test_driver_sigkill_then_resume_closes_the_lost_trial(tmp_path):
    """Defect 2: the driver is SIGKILLed while a trial Ray has not saved yet runs (experiment state
    saved only once: TUNE_GLOBAL_CHECKPOINT_S); resume closes its MLflow run as `lost`, fails its
    Optuna trial, and lists it in trials.csv so the numbering has no hole."""
    body = {**BASE, "name": "kill", "fixed": {"epochs": 6, "loss": "bpr", "batch_size": 64},
            "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
            "search": {"samples": 2, "concurrency": 1, "seed": 0},
            # Ray also saves its state once a trial has checkpointed num_to_keep times (default 2): with the
            # kill 2 epochs late, Ray knew trial 1 and the resume finished it (CI flake, 2026-12-05)
            "run": {"checkpoints_to_keep": 10}}
    out = tmp_path / "out"
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "100000"}
    with tuner_process(["run", write_spec(tmp_path, body), "--output", str(out), "--quiet"], tmp_path, env, "run") as p:
        # the second trial (number 1) has started: Ray saved its state once, before it existed
        wait_until(lambda: len(trial_runs(out)) == 2, 150, p, "the second trial started")
        os.kill(p.pid, signal.SIGKILL)  # the driver only: its Ray processes live on during the resume
        p.wait()
        (sweep_dir,) = [str(d) for d in out.iterdir() if d.is_dir() and d.name.startswith("kill-")]
        lost_id = next(r.info.run_id for r in trial_runs(out) if r.data.tags["tuner.trial_number"] == "1")
        with tuner_process(["resume", sweep_dir, "--quiet"], tmp_path, name="resume") as r:
            assert finish(r, 200) == 0, stderr_of(tmp_path, "resume")[-3000:]
    # leaving the block killed what the dead driver left behind (see README, Reliability)
    runs = mlflow_runs(out)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    lost = next(r for r in runs if r.info.run_id == lost_id)
    assert lost.data.tags["status"] == "lost" and lost.info.status == "FAILED"
    assert "driver died" in lost.data.tags["stop_reason"]
    table = pd.read_csv(os.path.join(sweep_dir, "trials.csv"))
    assert sorted(table["trial"]) == list(range(len(table)))  # no hole in the numbering (Optuna's, from 0)
    assert list(table.loc[table["status"] == "lost", "trial"]) == [1]
    assert (table["status"] == "completed").sum() == 2  # trial 0 again (Ray had it PENDING), a new trial 2
    states = study_states(out, sweep_dir)
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2


def test_two_sweeps_on_one_output_at_once(tmp_path):
    """Defect 4: two `tuner run --smoke-test` on the same --output, started together, both finish."""
    body = {**BASE, "name": "twin", "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
            "search": {"samples": 2, "concurrency": 2, "seed": 0}}
    path, out = write_spec(tmp_path, body), tmp_path / "out"
    args = ["run", path, "--smoke-test", "--output", str(out), "--quiet"]
    with tuner_process(args, tmp_path, name="a") as a, tuner_process(args, tmp_path, name="b") as b:
        codes = (finish(a, 180), finish(b, 180))
    assert codes == (0, 0), stderr_of(tmp_path, "a")[-2000:] + stderr_of(tmp_path, "b")[-2000:]
    dirs = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("twin-smoke-")]
    assert len(dirs) == 2 and all((d / "summary.json").is_file() for d in dirs)
    parents = parent_runs(out)
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)


def test_every_trial_failing_is_a_result(ray_session, tmp_path, capsys):
    """Defect 6: lr 1e30 makes every loss non-finite: trials.csv and summary.json say why, the parent
    is FAILED with status all_failed, one line on stderr, exit 1, no traceback."""
    from tuner.cli import main

    body = {**BASE, "name": "allbad", "fixed": {"epochs": 2, "loss": "bpr", "batch_size": 256, "lr": 1.0e30},
            "search": {"samples": 2, "concurrency": 2, "seed": 0}}
    out = tmp_path / "out"
    code = main(["run", write_spec(tmp_path, body), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    (sweep_dir,) = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("allbad-")]
    assert f"tuner: every trial failed (2 errored); see {sweep_dir / 'trials.csv'}" in err.splitlines()
    assert "Traceback" not in err
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert list(table["status"]) == ["errored", "errored"] and list(table["restarts"]) == [0, 0]
    assert sorted(table["trial"]) == [0, 1]  # failed before their first report, still numbered
    assert table["stop_reason"].str.startswith("non-finite loss").all()
    summary = json.load(open(sweep_dir / "summary.json"))
    assert summary["status"] == "all_failed" and summary["status_counts"] == {"errored": 2}
    assert all(r.startswith("non-finite loss") for r in summary["reasons"].values())
    assert not (sweep_dir / "best_config.yaml").exists()
    (parent,) = parent_runs(out)
    assert parent.info.status == "FAILED" and parent.data.tags["tuner.sweep_status"] == "all_failed"


class _Meta:
    def __init__(self, n):
        self.num_failures = n


class _Trial:
    def __init__(self, status, failures):
        self.status, self.run_metadata = status, _Meta(failures)


def test_restarts_count_restarts_not_failures():
    """Defect 3: a worker killed with max_failures 0 errors the trial once: 0 restarts, not 1."""
    from tuner.outcome import restarts_of

    assert restarts_of(_Trial("ERROR", 1)) == 0  # failed, never restarted
    assert restarts_of(_Trial("ERROR", 3)) == 2  # restarted twice, then gave up
    assert restarts_of(_Trial("TERMINATED", 2)) == 2  # restarted twice, then finished
    assert restarts_of(_Trial("TERMINATED", 0)) == 0


def test_checkpoint_fallback_to_the_previous_intact_one(tmp_path):
    """Defect 1 (trial side): a corrupt newest checkpoint falls back to the previous one; none intact
    means start over (None), never an exception."""
    import torch

    from tuner import checkpoints

    for i in (1, 2, 3):
        d = tmp_path / f"checkpoint_00000{i}"
        d.mkdir()
        checkpoints.save({"epoch": i, "w": torch.ones(3) * i}, str(d))
    newest = str(tmp_path / "checkpoint_000003")
    state, used = checkpoints.load_with_fallback(newest)
    assert state["epoch"] == 3 and used == newest
    corrupt(os.path.join(newest, "state.pt"), 300)
    state, used = checkpoints.load_with_fallback(newest)
    assert state["epoch"] == 2 and used.endswith("checkpoint_000002")
    with open(tmp_path / "checkpoint_000002" / "state.pt", "r+b") as fh:  # a flipped byte deep inside
        fh.seek(200)
        b = fh.read(1)
        fh.seek(200)
        fh.write(bytes([b[0] ^ 0xFF]))
    state, used = checkpoints.load_with_fallback(newest)
    assert state["epoch"] == 1
    corrupt(str(tmp_path / "checkpoint_000001" / "state.pt"))
    assert checkpoints.load_with_fallback(newest) == (None, None)


def test_same_second_sweep_folders_are_distinct(tmp_path):
    from tuner.recover import unique_dir

    made = [unique_dir(str(tmp_path), "s-20260101-000000") for _ in range(3)]
    assert [os.path.basename(m) for m in made] == ["s-20260101-000000", "s-20260101-000000-2", "s-20260101-000000-3"]


def test_worker_killed_with_sigkill_is_errored_with_no_restart(ray_session, tmp_path):
    """Defect 3: kill -9 of the worker running the only trial (max_failures 0): the trial is errored,
    trials.csv says 0 restarts (it said 1), and the sweep ends as `all_failed`, files written."""
    import threading

    from faultkit import trial_workers

    from tuner import outcome
    from tuner import spec as specmod
    from tuner import sweep

    body = {**BASE, "name": "k9", "fixed": {"epochs": 60, "loss": "bpr", "batch_size": 64, "lr": 0.01},
            "search": {"samples": 1, "concurrency": 1, "seed": 0}, "run": {"max_failures": 0}}
    spec = specmod.load(write_spec(tmp_path, body))
    out, ended = tmp_path / "out", {}

    def run():
        try:
            sweep.run(spec, output=str(out), verbose=0)
        except BaseException as e:  # noqa: BLE001 - checked below
            ended["error"] = e

    t = threading.Thread(target=run, daemon=True)  # signal handlers are skipped off the main thread
    t.start()
    wait_until(lambda: int(trial_runs(out)[0].data.tags.get("epochs_run", 0)) >= 1 and trial_workers(), 120,
               what="the trial running in a worker")
    for pid in trial_workers():
        os.kill(pid, signal.SIGKILL)
    t.join(timeout=120)
    assert not t.is_alive(), "the sweep did not end after its worker was killed"
    assert isinstance(ended.get("error"), outcome.AllFailed), ended
    (sweep_dir,) = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("k9-")]
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert list(table["status"]) == ["errored"] and list(table["restarts"]) == [0]
    (kid,) = trial_runs(out)
    assert kid.info.status == "FAILED" and kid.data.tags["status"] == "errored"


def test_a_crash_after_trials_ran_still_leaves_a_table_and_a_closed_parent(ray_session, tmp_path, monkeypatch):
    """Invariant: once trials have run, a failure of the driver's own code (here: Tuner.fit raising after
    the trials ended) still writes trials.csv and summary.json (status failed) and ends the parent FAILED."""
    from ray import tune

    from tuner import spec as specmod
    from tuner import sweep

    real_fit = tune.Tuner.fit

    def fit_then_raise(self):
        real_fit(self)
        raise RuntimeError("boom after the trials")

    monkeypatch.setattr(tune.Tuner, "fit", fit_then_raise)
    body = {**BASE, "name": "crash", "fixed": {"epochs": 2, "loss": "bpr", "batch_size": 256, "lr": 0.01},
            "search": {"samples": 2, "concurrency": 2, "seed": 0}}
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        sweep.run(specmod.load(write_spec(tmp_path, body)), output=str(out), verbose=0)
    (sweep_dir,) = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("crash-")]
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert sorted(table["trial"]) == [0, 1] and set(table["status"]) == {"completed"}
    assert json.load(open(sweep_dir / "summary.json"))["status"] == "failed"
    (parent,) = parent_runs(out)
    assert parent.info.status == "FAILED" and parent.data.tags["tuner.sweep_status"] == "failed"
