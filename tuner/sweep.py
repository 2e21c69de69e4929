"""`tuner run`: a validated Spec -> a Ray Tune sweep (Optuna TPE + ASHA) logged to MLflow.

Order matters for "nothing half-written": the spec and the data are checked first, then the
MLflow experiment is created on the driver, then the output folder, then Ray starts. This module
builds the sweep (searcher, scheduler, callbacks, sweep.json); tuner/pipeline.py runs it, and
computes test metrics after the sweep from the best trial's best checkpoint; Tune only ever sees
validation metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from functools import partial
from typing import Any, Mapping

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Tune warns when one result takes over 0.5 s to process (our MLflow writes on a busy machine): noise;
# a 5 s step is still worth a warning. Read by ray.tune.utils.util at import.
os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")

import optuna
from mlflow.entities import Metric, Param
from ray.tune import Tuner
from ray.tune.search import ConcurrencyLimiter

from tuner.stopper import PathologyStopper, SweepEnd
from tuner.trainable import train
from tuner import outcome, pipeline, progress, provenance, raycompat, recover, storage
from tuner import spec as specmod
from tuner import tracking
from tuner.pipeline import Interrupted, SweepResult  # noqa: F401 - callers catch sweep.Interrupted
from trainables.data import Dataset
from trainables.errors import TunerError, redact
from tuner.checks import describe_uri
from tuner.sampler import TunerTPESampler, bohb_gamma
from tuner.schedulers import Asha, Fifo, PauseAwareLimiter, PromotionASHA, Rebase
from tuner.searcher import PrunedAwareOptunaSearch
from tuner.space import define_by_run
from tuner.spec import Spec

class EpochsOf:
    """config -> the epochs that trial would run if never stopped early (picklable for Ray)."""

    def __init__(self, spec: Spec):
        self.default = spec.default_epochs()

    def __call__(self, config: Mapping[str, Any]) -> int:
        return int(config.get("epochs", self.default))


def epochs_counter(spec: Spec) -> EpochsOf:
    return EpochsOf(spec)


def _trainable(spec: Spec, data: Dataset):
    return pipeline.trainable(train, spec, data, model=spec.model)


def optuna_storage(spec: Spec, output: str) -> optuna.storages.RDBStorage:
    """The study's database: search.storage, else SQLite beside mlflow.db (optuna-dashboard opens
    either; a later sweep with the same search.study_name continues the study: a warm start)."""
    if spec.search.storage is None:
        with recover.output_lock(output):  # two sweeps creating optuna.db's tables at once collide
            return optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(os.path.join(output, 'optuna.db'))}")
    url, attempts = spec.search.storage, 3
    while True:  # drivers starting together on a new shared database race to create its tables
        attempts -= 1
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors; the message is one line either way
            reason = " ".join(str(e).split())[:200].replace(url, redact(url))
            if not attempts or not ("already exists" in reason or "duplicate key" in reason):
                raise TunerError(f"search.storage: cannot open Optuna's database {redact(url)}: {reason}") from None


def _search(spec: Spec, output: str, study_name: str, owner: str | None = None):
    """(searcher or None, search_alg or None, param_space) for the spec."""
    if not spec.space:
        return None, None, dict(spec.fixed)
    s = spec.search
    with warnings.catch_warnings():  # multivariate, group, constant_liar: "experimental" in Optuna since 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ours = {"paused_as_pruned": s.paused_as_pruned, "largest_rung": s.largest_rung,
                "random_fraction": s.random_fraction}
        tpe = (partial(TunerTPESampler, **ours) if any(ours.values())  # else Optuna's own, untouched
               else optuna.samplers.TPESampler)
        # TPESampler's gamma is deprecated since Optuna 4.9 (a FutureWarning) and goes in 6.0: pyproject caps optuna < 6
        warnings.filterwarnings("ignore", message=".*`gamma`", category=FutureWarning)
        # BOHB's good group: d = the space's knobs (a conditional space's inactive ones count too)
        gamma = {"gamma": partial(bohb_gamma, knobs=len(spec.space))} if s.gamma == "bohb" else {}
        sampler = (tpe(seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate,
                       group=s.group, constant_liar=s.constant_liar, **gamma) if s.algo == "tpe"
                   else optuna.samplers.RandomSampler(seed=s.seed))
    searcher = PrunedAwareOptunaSearch(space=define_by_run(spec), metric=spec.metric.name, mode=spec.metric.mode,
                                       sampler=sampler, epochs_of=epochs_counter(spec),
                                       study_name=study_name, storage=optuna_storage(spec, output), owner=owner)
    # asha_promote pauses trials at rungs: only running trials may count against the concurrency
    limiter = PauseAwareLimiter if spec.scheduler.type == "asha_promote" else ConcurrencyLimiter
    return searcher, limiter(searcher, max_concurrent=spec.search.concurrency), {}


def _scheduler(spec: Spec, search_alg=None):
    if spec.scheduler.type == "asha":
        return Asha(time_attr="training_iteration", metric=spec.metric.name, mode=spec.metric.mode,
                             max_t=spec.max_epochs(), grace_period=spec.scheduler.grace_period,
                             reduction_factor=spec.scheduler.reduction_factor, brackets=spec.scheduler.brackets)
    if spec.scheduler.type == "asha_promote":
        return PromotionASHA(metric=spec.metric.name, mode=spec.metric.mode,
                             milestones=spec.rungs(),
                             reduction_factor=spec.scheduler.reduction_factor, samples=spec.search.samples,
                             brackets=spec.scheduler.brackets,
                             limiter=search_alg if isinstance(search_alg, PauseAwareLimiter) else None)
    return Fifo()


def run(spec: Spec, *, output: str = "runs", address: str | None = None, verbose: int = 1,
        data: Dataset | None = None, source: Mapping[str, Any] | None = None) -> SweepResult:
    """Run a sweep. `source` ({spec_path, overrides, smoke}) is what `resume` needs to rebuild the spec."""
    t_start = time.time()
    spec = with_storage(spec, spec.run.storage)  # a relative folder: from here, not from resume's cwd
    entry = spec.model_entry()
    data = data if data is not None else entry.dataset(spec)
    base = entry.baseline(data, spec.eval.ks)
    uri = spec.tracking.uri or tracking.default_uri(output)
    session = pipeline.connect(spec, uri=uri, output=output, experiment=spec.tracking.experiment or spec.name,
                               address=address, verbose=verbose)  # MLflow checked before anything is written
    stamp = time.strftime("%Y%m%d-%H%M%S")
    study_name = spec.search.study_name

    def tags_of(sweep_dir: str) -> dict:
        return {"tuner.role": "sweep", "model": spec.model, "dataset": data.name,
                "optuna.study": study_name or os.path.basename(sweep_dir),
                "spec": os.path.basename(spec.path), "tuner.sweep_dir": sweep_dir,
                provenance.SWEEP_STATUS: "running", **provenance.parent_tags(spec.path)}

    sweep_dir, pid = pipeline.open_parent(session, output, f"{spec.name}-{stamp}", f"{spec.name} {stamp}", tags_of)
    study_name = study_name or os.path.basename(sweep_dir)
    _log_parent(session.client, pid, spec, data.name, base)
    _write_meta(sweep_dir, source, spec, output, session, pid, study_name)
    end = _stopper(spec, base)  # before the callback, which tells it of each trial's end
    runs_cb = tracking.TrialRuns(uri, session.exp_id, pid, model=spec.model, dataset=data.name, spec_file=spec.path,
                                 searched=tuple(p.name for p in spec.space), epochs_of=epochs_counter(spec),
                                 rungs=spec.rungs(),
                                 early_stopper="asha" if spec.scheduler.type.startswith("asha") else "",  # FIFO never stops early
                                 metric=spec.metric.name, mode=spec.metric.mode,
                                 source_tags=provenance.source_tags(spec.path),
                                 epoch_budget=spec.search.epoch_budget, stop_at=spec.search.stop_at,
                                 sweep_end_key=getattr(end, "key", None))
    searcher, search_alg, param_space = _search(spec, output, study_name, os.path.basename(sweep_dir))
    tuner = pipeline.make_tuner(
        _trainable(spec, data), spec, sweep_dir, param_space=param_space, samples=spec.search.samples,
        concurrency=None if search_alg else spec.search.concurrency, search_alg=search_alg,
        scheduler=_scheduler(spec, search_alg), verbose=verbose, keep=spec.run.checkpoints_to_keep,
        callbacks=[runs_cb, *progress.callbacks(verbose, spec.metric.name, spec.metric.mode,
                                                spec.search.samples, runs_cb, epochs_counter(spec))],
        stop=end)
    ctx = pipeline.Context(spec, data, output, sweep_dir, uri, session.client, session.exp_id, pid, base, t_start)
    return pipeline.execute(ctx, tuner, epochs_counter(spec))


def _stopper(spec: Spec, base: Mapping[str, Mapping[str, float]]):
    """Tune's stopper: the pathology watch (ends stuck / collapsed / diverged / mismatched /
    dominated trials early, with a reason), inside the sweep's epoch budget and target when it has them."""
    watch = PathologyStopper(spec.metric.name, spec.metric.mode, spec.diagnose,
                             reference=base.get("valid", {}).get(spec.metric.name.removeprefix("val_"))
                             ) if spec.diagnose.enabled else None
    if spec.search.epoch_budget is None and spec.search.stop_at is None:
        return watch
    return SweepEnd(watch, budget=spec.search.epoch_budget, target=spec.search.stop_at,
                    metric=spec.metric.name, mode=spec.metric.mode)


def _log_parent(client, pid: str, spec: Spec, dataset: str, base: Mapping[str, Mapping[str, float]]) -> None:
    """The parent run's params (the sweep's settings), the popularity baseline and the spec file."""
    client.log_batch(pid, params=[Param(k, str(v)[:500]) for k, v in {
        "model": spec.model, "metric": spec.metric.name, "mode": spec.metric.mode,
        "samples": spec.search.samples, "concurrency": spec.search.concurrency, "algo": spec.search.algo,
        **({"epoch_budget": spec.search.epoch_budget} if spec.search.epoch_budget else {}),
        **({"stop_at": spec.search.stop_at} if spec.search.stop_at is not None else {}),
        **({f"tpe.{k}": getattr(spec.search, k) for k in specmod.TPE_KNOBS} if spec.search.algo == "tpe" else {}),
        "scheduler": spec.scheduler.type, "grace_period": spec.scheduler.grace_period,
        "reduction_factor": spec.scheduler.reduction_factor, "max_epochs": spec.max_epochs(),
        "dataset": dataset, "searched": ",".join(p.name for p in spec.space) or "-",
        **{f"fixed.{k}": v for k, v in spec.fixed.items()},
    }.items()], metrics=[Metric(f"popularity_{s}_{k}", v, int(time.time() * 1000), 0)
                         for s, vals in base.items() for k, v in vals.items()])
    client.log_artifact(pid, spec.path)


def _write_meta(sweep_dir: str, source, spec: Spec, output: str, session, pid: str, study_name: str) -> None:
    """sweep.json: what `tuner resume` and `tuner ui` read (tuner/sweepdir.py checks it)."""
    source = dict(source or {"spec_path": spec.path, "overrides": {}, "smoke": False})
    source["spec_path"] = os.path.abspath(source["spec_path"])
    with open(os.path.join(sweep_dir, "sweep.json"), "w") as fh:
        json.dump({**source, "output": os.path.abspath(output), "tracking_uri": session.uri,
                   "experiment_id": session.exp_id, "parent_run_id": pid, "study_name": study_name,
                   "optuna_storage": redact(spec.search.storage) if spec.search.storage else None,
                   "storage": spec.run.storage,  # checked by storage_problem: holds no credentials
                   "metric": spec.metric.name, "mode": spec.metric.mode}, fh, indent=2)


def with_storage(spec: Spec, run_storage: str | None) -> Spec:
    return spec.replace(run=dataclasses.replace(spec.run, storage=storage.resolve(run_storage)))


def resume(sweep_dir: str, *, address: str | None = None, verbose: int = 1,
           run_storage: str | None = None) -> tuple[Spec, SweepResult]:
    """Continue an interrupted sweep: same trials, same Optuna study, same MLflow runs. The
    experiment state is read from the storage sweep.json names, or from `run_storage` (--storage)."""
    from tuner.sweepdir import read_sweep_meta  # one place reads and checks sweep.json

    meta = read_sweep_meta(sweep_dir)
    where = run_storage or meta.get("storage")
    if where is None and not os.path.isdir(os.path.join(sweep_dir, "ray")):
        raise TunerError(f"{sweep_dir}: not a tuner sweep folder (no ray/ beside sweep.json); "
                         "pass the folder `tuner run` printed")
    spec = with_storage(specmod.load(meta["spec_path"], meta.get("overrides") or {}), where)
    if where is not None:  # before Ray starts: a moved bucket or folder is one line
        storage.probe(where, "--storage" if run_storage else f"{os.path.join(sweep_dir, 'sweep.json')}: storage",
                      create=False)
        if not Tuner.can_restore(storage.experiment_path(spec.run.storage, sweep_dir)):
            raise TunerError(f"{sweep_dir}: no experiment state at {describe_uri(storage.experiment_path(where, sweep_dir))}"
                             "; pass --storage with the folder or URI the sweep's state moved to")
    if meta.get("max_epochs"):
        spec = specmod.with_max_epochs(spec, meta["max_epochs"])
    if meta.get("smoke"):
        spec = specmod.smoke(spec)
    t_start = time.time()
    entry = spec.model_entry()
    data = entry.dataset(spec)
    base = entry.baseline(data, spec.eval.ks)
    session = pipeline.connect(spec, uri=meta["tracking_uri"], output=meta["output"],
                               experiment=spec.tracking.experiment or spec.name,
                               address=address, verbose=verbose, fresh=False)
    pid = meta["parent_run_id"]
    session.client.update_run(pid, status="RUNNING")
    session.client.set_tag(pid, provenance.SWEEP_STATUS, "running")
    tuner = pipeline.restore_tuner(sweep_dir, _trainable(spec, data), spec.run.storage)
    scheduler, stopper = raycompat.tuner_scheduler(tuner), raycompat.tuner_stopper(tuner)
    if isinstance(scheduler, PromotionASHA) or isinstance(stopper, SweepEnd):
        histories, numbers = tracking.trial_histories(session.client, session.exp_id, pid, spec.metric.name)
        if isinstance(scheduler, PromotionASHA):  # its rungs as they were: who waits, who is out
            scheduler.restore(histories, numbers)
        if isinstance(stopper, SweepEnd):  # Ray restores the stopper as it was built: the epochs spent since
            stopper.restore({tid: max(h) for tid, h in histories.items() if h})
    if where is not None and isinstance(scheduler, Rebase):  # trials created from now on: storage as it is now
        scheduler.target = storage.location(spec.run.storage, sweep_dir)
    ctx = pipeline.Context(spec, data, meta["output"], os.path.abspath(sweep_dir), session.uri, session.client,
                           session.exp_id, pid, base, t_start, resumed=True, wall_before=_wall_before(sweep_dir))
    return spec, pipeline.execute(ctx, tuner, epochs_counter(spec))


def _wall_before(sweep_dir: str) -> float:
    """Wall seconds of the sweep's earlier runs: the summary.json each of them wrote when it ended
    (interrupted or not) carries the total so far; 0 when none did (a killed driver writes none)."""
    try:
        with open(os.path.join(sweep_dir, "summary.json")) as fh:
            wall = json.load(fh).get("wall_seconds")
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(wall) if isinstance(wall, (int, float)) and wall >= 0 else 0.0


def report(spec: Spec, res: SweepResult, top: int = 5, compact: bool = False) -> str:
    """The end-of-sweep summary printed by `tuner run` (tuner/outcome.py); compact for --quiet."""
    return outcome.render_compact(spec, res) if compact else outcome.render(spec, res, top)
