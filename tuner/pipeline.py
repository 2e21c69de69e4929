"""The one driver behind `tuner run`, `tuner resume` and `tuner compare`, as stages:

    connect      Ray up (refusing trials no node could hold), MLflow reachable and connected
    open_parent  the output folder (name-2, -3 for two in one second) and its MLflow parent run
    make_tuner   a Tuner with the shared RunConfig (storage, checkpoints, failures, callbacks)
    execute      fit under our SIGINT handling, then the outcome: completed (test metrics from the
                 best intact checkpoint), interrupted (resumable), all_failed or failed

`tuner compare` uses the first three with its own trial grid, and reads its own result table from
the ResultGrid. Each stage is the only place its step is written.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
from ray import tune

from tuner import cluster, finish, outcome, progress, raycompat, recover, storage, tracking
from tuner import spec as specmod
from tuner.searcher import PrunedAwareOptunaSearch
from tuner.spec import Spec
from trainables.data import Dataset

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    sweep_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    table: pd.DataFrame
    best_config: dict[str, Any]
    best_val: dict[str, float]
    test: dict[str, float]
    baseline: dict[str, dict[str, float]]
    wall_seconds: float
    study: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Interrupted(Exception):
    """The driver got SIGINT/SIGTERM: state is saved; `tuner resume SWEEP_DIR` continues."""

    def __init__(self, sweep_dir: str):
        super().__init__(sweep_dir)
        self.sweep_dir = sweep_dir


@dataclass
class Session:
    """Ray started and MLflow connected: what every driver has before its parent run."""

    uri: str
    client: Any
    exp_id: str


@dataclass
class Context:
    """What `execute` (and outcome/finish) need once the sweep folder and the parent run exist."""

    spec: Spec
    data: Dataset
    output: str
    sweep_dir: str
    uri: str
    client: Any
    exp_id: str
    pid: str
    base: dict
    t_start: float
    resumed: bool = False
    wall_before: float = 0.0  # seconds the sweep ran before this resume (earlier summary.json's wall_seconds)

    def wall(self) -> float:
        """The sweep's wall time over every run and resume of it, in seconds (idle gaps between them excluded)."""
        return self.wall_before + time.time() - self.t_start


def start_ray(spec: Spec, address: str | None, verbose: int) -> None:
    """A private local Ray, or the named cluster; then refuse trials no node could ever hold."""
    cluster.start(address, verbose)
    specmod.check_resources(spec, *cluster.largest_node())


def connect(spec: Spec, *, uri: str, output: str, experiment: str, address: str | None, verbose: int,
            fresh: bool = True) -> Session:
    """A fresh driver checks MLflow and the run storage before anything is written and creates
    OUTPUT; a resumed one finds both in place, and picks Ray's output engine now (its restored
    RunConfig keeps its own)."""
    if fresh:  # a resume has probed its storage already (sweep.resume: it must exist, not be created)
        tracking.check_reachable(uri)
        storage.probe(spec.run.storage)
    raycompat.save_state_between_uploads()
    if not fresh:
        progress.ray_verbosity(verbose)
    start_ray(spec, address, verbose)  # quiets the libraries first (cluster.start)
    if fresh:
        os.makedirs(output, exist_ok=True)
    client, exp_id = tracking.connect(uri, experiment, os.path.join(output, "mlartifacts"))
    return Session(uri, client, exp_id)


def open_parent(session: Session, output: str, folder: str, run_name: str,
                tags_of: Callable[[str], dict]) -> tuple[str, str]:
    """(the new folder OUTPUT/FOLDER[-n], the parent run id); `tags_of(folder)`: the parent's tags."""
    out_dir = recover.unique_dir(output, folder)
    parent = session.client.create_run(session.exp_id, run_name=run_name, tags=tags_of(out_dir))
    return out_dir, parent.info.run_id


def trainable(fn, spec: Spec, data: Dataset, **params):
    """`fn` with the data and eval settings bound, asking for the spec's resources per trial."""
    return tune.with_resources(
        tune.with_parameters(fn, data=data, **params, ks=spec.eval.ks, batch_users=spec.eval.batch_users,
                             use_gpu=spec.resources.gpu > 0),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )


def make_tuner(trainable, spec: Spec, out_dir: str, *, param_space: dict, samples: int, concurrency: int | None,
               callbacks: list, verbose: int, keep: int | None, search_alg=None, scheduler=None,
               stop=None) -> tune.Tuner:
    """The Tuner every driver runs: state in OUT_DIR/ray (or <run.storage>/<sweep folder name>),
    checkpoints ranked by the spec's metric."""
    storage_path, name = storage.location(spec.run.storage, out_dir)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        # reuse_actors: a trial reuses a finished trial's worker process (8x less overhead on tiny trials)
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=samples,
                                    max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, verbose=progress.ray_verbosity(verbose), callbacks=callbacks,
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=spec.metric.name,
                                                    checkpoint_score_order=spec.metric.mode),
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
        ),
    )


def restore_tuner(sweep_dir: str, trainable, run_storage: str | None = None) -> tune.Tuner:
    """The Tuner of an interrupted sweep. Tuner.restore unpickles the experiment state: only ever
    point it at our own sweep folders (or the storage they name)."""
    return tune.Tuner.restore(storage.experiment_path(run_storage, sweep_dir), trainable=trainable,
                              resume_unfinished=True, resume_errored=False, restart_errored=False)


def callback_of(tuner) -> tracking.TrialRuns:
    for cb in raycompat.tuner_callbacks(tuner):
        if isinstance(cb, tracking.TrialRuns):
            return cb
    raise RuntimeError("the sweep's MLflow callback is missing from the Tuner")


def searcher_of(tuner) -> PrunedAwareOptunaSearch | None:
    alg = raycompat.tuner_search_alg(tuner)
    while alg is not None and not isinstance(alg, PrunedAwareOptunaSearch):
        alg = getattr(alg, "searcher", None)  # ConcurrencyLimiter / SearchGenerator: public attribute
    return alg


def execute(ctx: Context, tuner, epochs_of) -> SweepResult:
    """fit, then the sweep's ending; the parent run is closed on every path."""
    runs_cb = callback_of(tuner)
    searcher = searcher_of(tuner)
    runs_cb.searcher = searcher  # MLflow names and Optuna trials share one numbering
    status, table = "failed", None
    try:
        with recover.catching() as interrupted:
            grid = tuner.fit()
        trials = raycompat.grid_trials(grid)
        # a resume after SIGKILL: MLflow runs / Optuna trials Ray never saved are closed as lost
        lost = recover.close_lost(runs_cb, searcher if ctx.resumed else None,
                                  [t.trial_id for t in trials])
        # read from the trials, not the stopper: a resumed Tune runs the copy saved in its experiment state
        search = ctx.spec.search
        ended = bool(tracking.sweep_end(trials, budget=search.epoch_budget, target=search.stop_at,
                                        metric=ctx.spec.metric.name, mode=ctx.spec.metric.mode))
        if ended and not interrupted.is_set():
            _close_cut_at_the_end(trials, runs_cb, searcher)
        runs_cb.close_running()  # before the table: a run still open here was interrupted
        results = list(grid)
        table = outcome.build_table(ctx.spec, results, trials, runs_cb, epochs_of, lost)
        # fewer trials than samples after its budget or target ended the sweep: its end, not an interruption
        if (interrupted.is_set() or (len(trials) < ctx.spec.search.samples and not ended)
                or any(t.status not in ("TERMINATED", "ERROR") for t in trials)):
            status = "interrupted"
            outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            raise Interrupted(ctx.sweep_dir)
        if not [r for r in results if r.error is None and r.metrics and ctx.spec.metric.name in r.metrics]:
            status = "all_failed"
            outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            raise outcome.AllFailed(ctx.sweep_dir, outcome.failure_counts(table))
        res = _complete(ctx, searcher, results, table, runs_cb, epochs_of)
        status = "completed"
        return res
    except KeyboardInterrupt:  # a second Ctrl+C, or one outside Tune's loop: still resumable
        status = "interrupted"
        raise Interrupted(ctx.sweep_dir) from None
    except Exception:
        if status == "failed" and table is None:
            table = _salvage(ctx, runs_cb, epochs_of)
        raise
    finally:
        runs_cb.close_running()
        if status != "completed":
            if status == "failed" and table is not None:  # an unexpected error: keep what is known
                outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            outcome.close_parent(ctx.client, ctx.pid, status, ctx.sweep_dir)


def _close_cut_at_the_end(trials: list, runs_cb, searcher) -> None:
    """The trials the sweep's epoch budget or target ended. Tune's stop_all sets them TERMINATED without telling
    the callbacks or the searcher (TuneController._stop_experiment_if_needed, ray 2.60.0), so their
    MLflow runs would read "interrupted" and their Optuna trials stay RUNNING: close them as every
    early stop is closed, stopped_early (tracking.sweep_end's reason) and PRUNED."""
    for t in trials:
        run_id = runs_cb.run_id(t)
        run = runs_cb.safe(runs_cb.client.get_run, run_id) if run_id and t.status == "TERMINATED" else None
        if run is not None and run.info.status == "RUNNING":  # ended by Tune, never closed
            runs_cb.on_trial_complete(iteration=0, trials=trials, trial=t)
            if searcher is not None:
                searcher.on_trial_complete(t.trial_id, result=t.last_result or None)


def _salvage(ctx: Context, runs_cb, epochs_of) -> pd.DataFrame | None:
    """`fit` itself raised: a trials table from the experiment state Ray last saved (best effort),
    so that the sweep folder still says which trials ran and how far."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    try:
        analysis = ExperimentAnalysis(storage.experiment_path(ctx.spec.run.storage, ctx.sweep_dir))
        return outcome.build_table(ctx.spec, list(ResultGrid(analysis)), analysis.trials, runs_cb, epochs_of)
    except Exception as e:  # noqa: BLE001 - nothing saved yet, or unreadable: the parent still closes
        log.warning("no trials table after the failure: %s", str(e).splitlines()[0][:200] if str(e) else e)
        return None


def _complete(ctx: Context, searcher, results: list, table: pd.DataFrame, runs_cb, epochs_of) -> SweepResult:
    best_config, best_val, test, wall, used, imp, paths = finish.complete(
        ctx, searcher, results, table, runs_cb, epochs_of)
    ctx.client.set_terminated(ctx.pid, "FINISHED")
    return SweepResult(ctx.sweep_dir, ctx.uri, ctx.exp_id, ctx.pid, table, best_config, best_val, test, ctx.base, wall,
                       study=raycompat.optuna_study(searcher) if searcher is not None else None,
                       extra={"failed_mlflow_writes": runs_cb.failed_writes,
                              "optuna_storage": raycompat.storage_url(searcher) if searcher is not None else None,
                              "study_name": raycompat.study_name(searcher) if searcher is not None else None,
                              "report": paths.get("html"), "importance": imp, "test_checkpoint": used})
