"""`tuner run`: a validated Spec -> a Ray Tune sweep (Optuna TPE + ASHA) logged to MLflow.

Order matters for "nothing half-written": the spec and the data are checked first, then the
MLflow experiment is created on the driver, then the output folder, then Ray starts. Test
metrics are computed here, after the sweep, from the best trial's best checkpoint; Tune only
ever sees validation metrics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Tune warns when one result takes over 0.5 s to process (our MLflow writes on a busy machine): noise;
# a 5 s step is still worth a warning. Read by ray.tune.utils.util at import.
os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")

import optuna
import pandas as pd
from mlflow.entities import Metric, Param
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from tuner.stopper import PathologyStopper
from tuner.trainable import train
from tuner import cluster
from tuner import finish, outcome, progress, provenance, recover
from tuner import spec as specmod
from tuner import tracking
from trainables.data import Dataset
from trainables.errors import TunerError
from tuner.schedulers import PauseAwareLimiter, PromotionASHA
from tuner.searcher import PrunedAwareOptunaSearch
from tuner.space import define_by_run
from tuner.spec import Spec

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


class EpochsOf:
    """config -> the epochs that trial would run if never stopped early (picklable for Ray)."""

    def __init__(self, spec: Spec):
        self.default = int(spec.fixed.get("epochs", spec.model_entry().config_cls().epochs))

    def __call__(self, config: Mapping[str, Any]) -> int:
        return int(config.get("epochs", self.default))


def epochs_counter(spec: Spec) -> EpochsOf:
    return EpochsOf(spec)


def start_ray(spec: Spec, address: str | None, verbose: int) -> None:
    """A private local Ray, or the named cluster; then refuse trials no node could ever hold."""
    cluster.start(address, verbose)
    specmod.check_resources(spec, *cluster.largest_node())


class Interrupted(Exception):
    """The driver got SIGINT/SIGTERM: state is saved; `tuner resume SWEEP_DIR` continues."""

    def __init__(self, sweep_dir: str):
        super().__init__(sweep_dir)
        self.sweep_dir = sweep_dir


@dataclass
class _Sweep:
    """What `run` and `resume` share once the sweep folder and the parent run exist."""

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


def _trainable(spec: Spec, data: Dataset):
    return tune.with_resources(
        tune.with_parameters(train, data=data, model=spec.model, ks=spec.eval.ks,
                             batch_users=spec.eval.batch_users, use_gpu=spec.resources.gpu > 0),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )


def _search(spec: Spec, output: str, study_name: str, owner: str | None = None):
    """(searcher or None, search_alg or None, param_space) for the spec."""
    if not spec.space:
        return None, None, dict(spec.fixed)
    sampler = (optuna.samplers.TPESampler(seed=spec.search.seed) if spec.search.algo == "tpe"
               else optuna.samplers.RandomSampler(seed=spec.search.seed))
    # The study lives in SQLite beside mlflow.db: optuna-dashboard can open it, and a later
    # sweep with the same search.study_name continues it (warm start).
    with recover.output_lock(output):  # two sweeps creating optuna.db's tables at once collide
        storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(os.path.join(output, 'optuna.db'))}")
        searcher = PrunedAwareOptunaSearch(space=define_by_run(spec), metric=spec.metric.name, mode=spec.metric.mode,
                                           sampler=sampler, epochs_of=epochs_counter(spec),
                                           study_name=study_name, storage=storage, owner=owner)
    # asha_promote pauses trials at rungs: only running trials may count against the concurrency
    limiter = PauseAwareLimiter if spec.scheduler.type == "asha_promote" else ConcurrencyLimiter
    return searcher, limiter(searcher, max_concurrent=spec.search.concurrency), {}


def _scheduler(spec: Spec, search_alg=None):
    if spec.scheduler.type == "asha":
        return ASHAScheduler(time_attr="training_iteration", metric=spec.metric.name, mode=spec.metric.mode,
                             max_t=spec.max_epochs(), grace_period=spec.scheduler.grace_period,
                             reduction_factor=spec.scheduler.reduction_factor)
    if spec.scheduler.type == "asha_promote":
        return PromotionASHA(metric=spec.metric.name, mode=spec.metric.mode,
                             milestones=spec.scheduler.rungs(spec.max_epochs()),
                             reduction_factor=spec.scheduler.reduction_factor, samples=spec.search.samples,
                             limiter=search_alg if isinstance(search_alg, PauseAwareLimiter) else None)
    return FIFOScheduler()


def run(spec: Spec, *, output: str = "runs", address: str | None = None, verbose: int = 1,
        data: Dataset | None = None, source: Mapping[str, Any] | None = None) -> SweepResult:
    """Run a sweep. `source` ({spec_path, overrides, smoke}) is what `resume` needs to rebuild the spec."""
    t_start = time.time()
    entry = spec.model_entry()
    data = data if data is not None else entry.dataset(spec)
    searched = tuple(p.name for p in spec.space)
    base = entry.baseline(data, spec.eval.ks)
    uri = spec.tracking.uri or tracking.default_uri(output)
    tracking.check_reachable(uri)  # before anything is written
    progress.quiet_libraries()
    start_ray(spec, address, verbose)
    os.makedirs(output, exist_ok=True)
    client, exp_id = tracking.connect(uri, spec.tracking.experiment or spec.name, os.path.join(output, "mlartifacts"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_dir = recover.unique_dir(output, f"{spec.name}-{stamp}")  # -2, -3 for sweeps in the same second
    study_name = spec.search.study_name or os.path.basename(sweep_dir)

    parent = client.create_run(exp_id, run_name=f"{spec.name} {stamp}", tags={
        "tuner.role": "sweep", "model": spec.model, "dataset": data.name, "optuna.study": study_name,
        "spec": os.path.basename(spec.path), "tuner.sweep_dir": sweep_dir, provenance.SWEEP_STATUS: "running",
        **provenance.parent_tags(spec.path),
    })
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param(k, str(v)[:500]) for k, v in {
        "model": spec.model, "metric": spec.metric.name, "mode": spec.metric.mode,
        "samples": spec.search.samples, "concurrency": spec.search.concurrency, "algo": spec.search.algo,
        "scheduler": spec.scheduler.type, "grace_period": spec.scheduler.grace_period,
        "reduction_factor": spec.scheduler.reduction_factor, "max_epochs": spec.max_epochs(),
        "dataset": data.name, "searched": ",".join(searched) or "-",
        **{f"fixed.{k}": v for k, v in spec.fixed.items()},
    }.items()], metrics=[Metric(f"popularity_{s}_{k}", v, int(time.time() * 1000), 0)
                         for s, vals in base.items() for k, v in vals.items()])
    client.log_artifact(pid, spec.path)
    source = dict(source or {"spec_path": spec.path, "overrides": {}, "smoke": False})
    source["spec_path"] = os.path.abspath(source["spec_path"])
    with open(os.path.join(sweep_dir, "sweep.json"), "w") as fh:
        json.dump({**source, "output": os.path.abspath(output), "tracking_uri": uri, "experiment_id": exp_id,
                   "parent_run_id": pid, "study_name": study_name,
                   "metric": spec.metric.name, "mode": spec.metric.mode}, fh, indent=2)

    runs_cb = tracking.TrialRuns(uri, exp_id, pid, model=spec.model, dataset=data.name, spec_file=spec.path,
                                 searched=searched, epochs_of=epochs_counter(spec), rungs=spec.scheduler.rungs(spec.max_epochs()),
                                 early_stopper="asha" if spec.scheduler.type.startswith("asha") else "",  # FIFO never stops early
                                 metric=spec.metric.name, mode=spec.metric.mode,
                                 source_tags=provenance.source_tags(spec.path))
    searcher, search_alg, param_space = _search(spec, output, study_name, os.path.basename(sweep_dir))
    tuner = tune.Tuner(
        _trainable(spec, data),
        param_space=param_space,
        # reuse_actors: a trial reuses a finished trial's worker process (8x less overhead on tiny trials)
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=_scheduler(spec, search_alg), num_samples=spec.search.samples,
                                    max_concurrent_trials=None if search_alg else spec.search.concurrency,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name="ray", storage_path=sweep_dir, verbose=progress.ray_verbosity(verbose),
            callbacks=[runs_cb, *progress.callbacks(verbose, spec.metric.name, spec.metric.mode,
                                                    spec.search.samples, runs_cb, epochs_counter(spec))],
            # ends stuck / collapsed / diverged / mismatched / dominated trials early, with a reason
            stop=PathologyStopper(spec.metric.name, spec.metric.mode, spec.diagnose,
                                  reference=base.get("valid", {}).get(spec.metric.name.removeprefix("val_")))
            if spec.diagnose.enabled else None,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.run.checkpoints_to_keep,
                                                    checkpoint_score_attribute=spec.metric.name,
                                                    checkpoint_score_order=spec.metric.mode),
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
        ),
    )
    ctx = _Sweep(spec, data, output, sweep_dir, uri, client, exp_id, pid, base, t_start)
    return _execute(ctx, tuner, address, verbose)


def resume(sweep_dir: str, *, address: str | None = None, verbose: int = 1) -> tuple[Spec, SweepResult]:
    """Continue an interrupted sweep: same trials, same Optuna study, same MLflow runs."""
    meta_path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.isfile(meta_path) or not os.path.isdir(os.path.join(sweep_dir, "ray")):
        raise TunerError(f"{sweep_dir}: not a tuner sweep folder (no sweep.json and ray/); "
                         "pass the folder `tuner run` printed")
    from tuner.sweepdir import read_sweep_meta  # one place reads and checks sweep.json

    meta = read_sweep_meta(sweep_dir)
    spec = specmod.load(meta["spec_path"], meta.get("overrides") or {})
    if meta.get("max_epochs"):
        spec = specmod.with_max_epochs(spec, meta["max_epochs"])
    if meta.get("smoke"):
        spec = specmod.smoke(spec)
    t_start = time.time()
    entry = spec.model_entry()
    data = entry.dataset(spec)
    base = entry.baseline(data, spec.eval.ks)
    uri = meta["tracking_uri"]
    progress.quiet_libraries()
    progress.ray_verbosity(verbose)  # the restored RunConfig keeps its own verbose; this picks the engine
    start_ray(spec, address, verbose)
    client, exp_id = tracking.connect(uri, spec.tracking.experiment or spec.name,
                                      os.path.join(meta["output"], "mlartifacts"))
    pid = meta["parent_run_id"]
    client.update_run(pid, status="RUNNING")
    client.set_tag(pid, provenance.SWEEP_STATUS, "running")
    # Tuner.restore unpickles the experiment state: only ever point it at our own sweep folders.
    tuner = tune.Tuner.restore(os.path.join(os.path.abspath(sweep_dir), "ray"), trainable=_trainable(spec, data),
                               resume_unfinished=True, resume_errored=False, restart_errored=False)
    ctx = _Sweep(spec, data, meta["output"], os.path.abspath(sweep_dir), uri, client, exp_id, pid, base, t_start,
                 resumed=True)
    return spec, _execute(ctx, tuner, address, verbose)


def _callback(tuner) -> "tracking.TrialRuns":
    for cb in tuner._local_tuner.get_run_config().callbacks or []:
        if isinstance(cb, tracking.TrialRuns):
            return cb
    raise RuntimeError("the sweep's MLflow callback is missing from the Tuner")


def _searcher_of(tuner) -> PrunedAwareOptunaSearch | None:
    alg = tuner._local_tuner._tune_config.search_alg
    while alg is not None and not isinstance(alg, PrunedAwareOptunaSearch):
        alg = getattr(alg, "searcher", None)
    return alg


def _execute(ctx: _Sweep, tuner, address: str | None, verbose: int) -> SweepResult:
    runs_cb = _callback(tuner)
    searcher = _searcher_of(tuner)
    runs_cb.searcher = searcher  # MLflow names and Optuna trials share one numbering
    status, table = "failed", None
    try:
        with recover.catching() as interrupted:
            grid = tuner.fit()
        trials = grid._experiment_analysis.trials
        # a resume after SIGKILL: MLflow runs / Optuna trials Ray never saved are closed as lost
        lost = recover.close_lost(runs_cb, searcher if ctx.resumed else None,
                                  [t.trial_id for t in trials])
        runs_cb.close_running()  # before the table: a run still open here was interrupted
        results = list(grid)
        table = outcome.build_table(ctx.spec, results, trials, runs_cb, epochs_counter(ctx.spec), lost)
        if (interrupted.is_set() or len(trials) < ctx.spec.search.samples
                or any(t.status not in ("TERMINATED", "ERROR") for t in trials)):
            status = "interrupted"
            outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            raise Interrupted(ctx.sweep_dir)
        if not [r for r in results if r.error is None and r.metrics and ctx.spec.metric.name in r.metrics]:
            status = "all_failed"
            outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            raise outcome.AllFailed(ctx.sweep_dir, outcome.failure_counts(table))
        res = _complete(ctx, searcher, results, table, runs_cb)
        status = "completed"
        return res
    except KeyboardInterrupt:  # a second Ctrl+C, or one outside Tune's loop: still resumable
        status = "interrupted"
        raise Interrupted(ctx.sweep_dir) from None
    except Exception:
        if status == "failed" and table is None:
            table = _salvage(ctx, runs_cb)
        raise
    finally:
        runs_cb.close_running()
        if status != "completed":
            if status == "failed" and table is not None:  # an unexpected error: keep what is known
                outcome.write_files(ctx.sweep_dir, table, outcome.base_summary(ctx, table, status))
            outcome.close_parent(ctx.client, ctx.pid, status, ctx.sweep_dir)


def _salvage(ctx: _Sweep, runs_cb) -> pd.DataFrame | None:
    """`fit` itself raised: a trials table from the experiment state Ray last saved (best effort),
    so that the sweep folder still says which trials ran and how far."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    try:
        analysis = ExperimentAnalysis(os.path.join(ctx.sweep_dir, "ray"))
        return outcome.build_table(ctx.spec, list(ResultGrid(analysis)), analysis.trials, runs_cb,
                                   epochs_counter(ctx.spec))
    except Exception as e:  # noqa: BLE001 - nothing saved yet, or unreadable: the parent still closes
        log.warning("no trials table after the failure: %s", str(e).splitlines()[0][:200] if str(e) else e)
        return None


def _complete(ctx: _Sweep, searcher, results: list, table: pd.DataFrame, runs_cb) -> SweepResult:
    best_config, best_val, test, wall, used, imp, paths = finish.complete(
        ctx, searcher, results, table, runs_cb, epochs_counter(ctx.spec))
    ctx.client.set_terminated(ctx.pid, "FINISHED")
    return SweepResult(ctx.sweep_dir, ctx.uri, ctx.exp_id, ctx.pid, table, best_config, best_val, test, ctx.base, wall,
                       study=searcher._ot_study if searcher is not None else None,
                       extra={"failed_mlflow_writes": runs_cb.failed_writes,
                              "optuna_storage": searcher._storage.url if searcher is not None else None,
                              "study_name": searcher._study_name if searcher is not None else None,
                              "report": paths.get("html"), "importance": imp, "test_checkpoint": used})


def report(spec: Spec, res: SweepResult, top: int = 5, compact: bool = False) -> str:
    """The end-of-sweep summary printed by `tuner run` (tuner/outcome.py); compact for --quiet."""
    return outcome.render_compact(spec, res) if compact else outcome.render(spec, res, top)
