"""Issue 19: the setup a team shares. One MLflow server backed by PostgreSQL with its artifacts in S3
(moto's server on loopback), Optuna's studies in the same PostgreSQL, and two sweeps started by
two drivers at once writing into both: no lock errors, no mixed runs, both parents complete, both
studies readable, and the database password never printed."""

from __future__ import annotations

import os
import subprocess

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

import services
from faultkit import finish, stderr_of, tuner_process

pytestmark = pytest.mark.ray

SAMPLES = 4


def spec(name: str, tracking_uri: str, optuna_uri: str) -> dict:
    return {
        "name": name, "model": "bpr_mf", "metric": {"name": "val_ndcg_10", "mode": "max"},
        "data": {"synthetic": {"n_users": 120, "n_items": 60, "mean_length": 8, "seed": 1}},
        "fixed": {"epochs": 3, "batch_size": 256, "loss": "bpr"},
        "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
        "search": {"samples": SAMPLES, "concurrency": 1, "seed": 0, "storage": optuna_uri},
        "resources": {"cpu": 1},
        "tracking": {"uri": tracking_uri, "experiment": "team"},  # one experiment, two sweeps
    }


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL + S3 + `mlflow server` on loopback, ended in `finally` (the context managers)."""
    logs = str(tmp_path_factory.mktemp("services"))
    try:
        with services.postgres() as pg, services.s3_server(logs) as s3:
            s3.make_bucket("artifacts")
            env = {**pg.env(), **s3.env()}
            with services.mlflow_server(pg.uri("mlflow"), "s3://artifacts/mlflow", logs, env) as url:
                yield pg, env, url
    except services.Unavailable as e:
        pytest.skip(str(e))


def test_two_sweeps_at_once_share_one_server_and_one_database(team, tmp_path, monkeypatch):
    pg, env, url = team
    monkeypatch.setenv("PGPASSWORD", pg.password)  # for this test's own Optuna reads below
    names = ("alpha", "beta")
    with tuner_process(_args(tmp_path, names[0], url, pg), tmp_path, env, names[0]) as a, \
         tuner_process(_args(tmp_path, names[1], url, pg), tmp_path, env, names[1]) as b:
        procs = {names[0]: a, names[1]: b}
        codes = {n: finish(p, timeout=600) for n, p in procs.items()}
    logs = {n: stderr_of(tmp_path, n) + open(tmp_path / f"{n}.out").read() for n in names}
    for n in names:
        assert codes[n] == 0, f"{n}: exit {codes[n]}\n{logs[n][-2000:]}"
        assert "locked" not in logs[n].lower(), logs[n][-2000:]
        assert pg.password not in logs[n], "the database password was printed"

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("team")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {os.path.basename(r.data.tags["tuner.sweep_dir"]).split("-")[0]: r
               for r in runs if r.data.tags.get("tuner.role") == "sweep"}
    assert sorted(parents) == sorted(names)
    trials = [r for r in runs if r.data.tags.get("tuner.trial_id")]
    assert len(trials) == 2 * SAMPLES
    for n in names:
        parent = parents[n]
        assert parent.info.status == "FINISHED" and parent.data.tags.get("tuner.sweep_status") == "completed"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == SAMPLES, f"{n}: {len(children)} trial runs under its parent"
        # no mixed runs: every trial run of this sweep sits under this parent, none under the other
        assert len({c.data.tags["tuner.trial_id"] for c in children}) == SAMPLES
        # the artifacts went through the server into the bucket and come back
        listed = [f.path for f in client.list_artifacts(parent.info.run_id)]
        assert listed, f"{n}: the parent has no artifacts"

    storage = optuna.storages.RDBStorage(pg.uri("optuna"))
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert len(studies) == 2, sorted(studies)
    for s in studies.values():
        assert s.n_trials == SAMPLES and s.best_trial is not None


def _args(tmp_path, name: str, url: str, pg) -> list[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec(name, url, pg.uri("optuna")), sort_keys=False))
    return ["run", str(path), "--output", str(tmp_path / f"out-{name}"), "--quiet"]


def test_services_are_gone_after_the_context(tmp_path):
    """The fixtures' `finally` really ends what they start (a leftover server hangs later runs)."""
    try:
        with services.postgres(databases=()) as pg:
            port = pg.port
            assert services.port_answers(port)
    except services.Unavailable as e:
        pytest.skip(str(e))
    with pytest.raises(OSError):
        services.port_answers(port)
    out = subprocess.run(["pgrep", "-f", f"port={port}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""
