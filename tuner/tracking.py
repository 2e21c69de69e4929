"""MLflow: one parent run per sweep, one nested child run per trial, logged from the driver.

Why not Ray's MLflowLoggerCallback: it makes flat runs, logs every numeric key (pid,
timestamp, ...), and opens duplicate runs after a restore. Here the driver owns all MLflow
writes: the experiment is created before any trial starts (no racing first writes), each
trial's run is found again by its `tuner.trial_id` tag after a restore, and per-epoch metrics
go in one `log_batch` call with step = epoch.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Iterable, Mapping

from trainables.errors import TunerError, redact  # noqa: F401  (redact: cli.py prints URIs without importing mlflow)

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tuner import raycompat, stopper

log = logging.getLogger(__name__)

# Keys Ray adds to every result; none of them says anything about the model.
RAY_KEYS = frozenset({
    "epoch", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
    "time_since_restore", "iterations_since_restore", "done", "should_checkpoint", "date",
    "hostname", "node_ip", "trial_id", "checkpoint_dir_name", "config", "experiment_tag",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "warmup_time",
})

# MLflow's experiment-type tag. The 3.17 UI reads it only where its workflow-type switch is off
# (the OSS build has it on: the view follows the sidebar switch / ?workflowType=machine_learning,
# see README "Reading results"); other MLflow front ends and versions use the tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def default_uri(output_dir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(output_dir, 'mlflow.db'))}"


def check_reachable(uri: str, timeout: float = 20.0) -> None:
    """Fail fast on an http(s) tracking server that does not answer (MLflow itself retries for minutes).
    A refused port fails at once; `timeout` only bounds a silent one. 20 s, not 5: a busy shared server
    (two drivers starting at once on a loaded machine, in CI) took longer than 5 s to answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered: auth or a proxy path; let MLflow report what is wrong
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TunerError(f"tracking.uri: cannot reach MLflow at {redact(uri)}: {reason}") from None


def connect(uri: str, experiment: str, artifact_root: str) -> tuple[MlflowClient, str]:
    """Create (or find) the experiment on the driver, before any trial runs.

    Under a lock in the output folder (artifact_root's parent): two sweeps creating the same SQLite
    database at once raced in MLflow's alembic migration ("Online migration expected to match one
    row") or both created the experiment."""
    from tuner.recover import output_lock

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with output_lock(os.path.dirname(os.path.abspath(artifact_root))):
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name(experiment)  # the first query creates/migrates the DB
            if exp is None:
                try:
                    return client, client.create_experiment(
                        experiment, artifact_location=os.path.abspath(artifact_root), tags=EXPERIMENT_KIND)
                except mlflow.exceptions.MlflowException as e:
                    # another driver (other output folder, so not under this lock) on the same server
                    # created it between our lookup and our create: use theirs
                    exp = client.get_experiment_by_name(experiment)
                    if exp is None or "ALREADY_EXISTS" not in str(e):
                        raise
            return client, exp.experiment_id
    except Exception as e:  # any backend failure: unreachable server, bad DB path, auth
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TunerError(f"tracking.uri: cannot reach MLflow at {redact(uri)}: {msg[:200]}") from None


def fmt(v: Any) -> str:
    """Short, readable value for run names: 0.0031 -> 3.1e-3, 64 -> 64."""
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            m, e = f"{v:.1e}".split("e")
            return f"{m}e{int(e)}"
        return f"{v:.3g}"
    return str(v)


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in config.items()}


def trial_histories(client: MlflowClient, experiment_id: str, parent_run_id: str,
                    metric: str) -> tuple[dict[str, dict[int, tuple[float, float]]], dict[str, int]]:
    """({Ray trial id: {epoch: (timestamp in s, value)}}, {Ray trial id: trial number}) of a sweep's
    trials, from their MLflow runs in one search (each epoch is logged once: TrialRuns skips replayed
    epochs). `tuner resume` rebuilds the asha_promote rungs and brackets from them."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)
    histories: dict[str, dict[int, tuple[float, float]]] = {}
    numbers: dict[str, int] = {}
    for r in runs:
        tid = r.data.tags.get("tuner.trial_id")
        if tid:
            histories[tid] = {int(m.step): (m.timestamp / 1000.0, float(m.value))
                              for m in client.get_metric_history(r.info.run_id, metric)}
            numbers[tid] = int(r.data.tags.get("tuner.trial_number", "0"))
    return histories, numbers


def epochs_spent(trials) -> int:
    """The epochs a sweep's trials have run in all: each trial's last reported `epoch` (what
    search.epoch_budget counts; Tune's own trials, so it holds after `tuner resume` too)."""
    return sum(int((t.last_result or {}).get("epoch", 0) or 0) for t in trials)


def sweep_end(trials, *, budget: int | None, target: float | None, metric: str, mode: str) -> str:
    """Why the sweep's own limits ended it (tuner/stopper.py SweepEnd), read from Tune's trials;
    "" when they did not: a trial reached search.stop_at, or the trials spent search.epoch_budget."""
    if target is not None:
        best = [raycompat.trial_best(t, metric, mode) for t in trials]
        if any(b is not None and stopper.reaches(b, target, mode) for b in best):
            return f"target reached ({metric} {'>=' if mode == 'max' else '<='} {target:g})"
    if budget and epochs_spent(trials) >= budget:
        return f"epoch budget spent ({budget} trial-epochs)"
    return ""


class TrialRuns(tune.Callback):
    """Ray Tune callback: a child MLflow run per trial, nested under `parent_run_id`."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
                 model: str, dataset: str, spec_file: str, searched: Iterable[str], epochs_of,
                 rungs: tuple[int, ...] = (), early_stopper: str = "asha", metric: str = "", mode: str = "max",
                 source_tags: Mapping[str, str] | None = None, epoch_budget: int | None = None,
                 stop_at: float | None = None, sweep_end_key: str | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent = parent_run_id
        self.base_tags = {"model": model, "dataset": dataset, "spec": os.path.basename(spec_file),
                          **dict(source_tags or {})}
        self.searched = tuple(searched)
        self.epochs_of = epochs_of  # config -> planned epochs
        self.rungs = tuple(rungs)  # ASHA milestones (epochs), ascending
        self.runs: dict[str, str] = {}  # trial_id -> run_id
        self.last_step: dict[str, int] = {}  # trial_id -> last epoch logged
        self.numbers: dict[str, int] = {}
        self.final: dict[str, str] = {}  # trial_id -> the status tag it ended with
        self.early_stopper = early_stopper  # "asha" when a scheduler may stop trials early, else ""
        self.failed_writes = 0
        self.metric, self.mode = metric, mode
        self.best: dict[str, tuple[float, int]] = {}  # trial_id -> (best value so far, its epoch)
        self.reasons: dict[str, str] = {}  # trial_id -> the stop_reason tag it ended with
        self.searcher = None  # the sweep's PrunedAwareOptunaSearch, linked by sweep.py (not pickled)
        self.epoch_budget, self.stop_at = epoch_budget, stop_at  # search.epoch_budget / stop_at, or None
        self.sweep_end_key = sweep_end_key  # the sweep's SweepEnd stopper (tuner/stopper.py), told each end

    # Ray pickles callbacks into its experiment state (for Tuner.restore): drop the client.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["client"] = None
        state["searcher"] = None
        return state

    def __setstate__(self, state):
        state.setdefault("final", {})  # pickled by an older version
        state.setdefault("early_stopper", "asha")
        for k, v in (("metric", ""), ("mode", "max"), ("best", {}), ("reasons", {}), ("searcher", None),
                     ("epoch_budget", None), ("stop_at", None), ("sweep_end_key", None)):
            state.setdefault(k, v)
        self.__dict__.update(state)
        self.client = MlflowClient(self.tracking_uri)

    # -- helpers ---------------------------------------------------------------------------
    def safe(self, fn, *args, **kwargs):
        """MLflow hiccups must not kill a sweep: retry twice, then count and go on."""
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - network, locked DB, ...
                if attempt == 2:
                    self.failed_writes += 1
                    log.warning("MLflow write failed (%s); continuing", str(e).splitlines()[0][:200])
                    return None
                time.sleep(0.2 * (attempt + 1))

    def _existing_runs(self) -> None:
        """After a restore: map trial ids to the runs created before the interruption."""
        runs = self.safe(self.client.search_runs, [self.experiment_id],
                          f"tags.mlflow.parentRunId = '{self.parent}'", max_results=5000) or []
        for r in runs:
            tid = r.data.tags.get("tuner.trial_id")
            if tid:
                self.runs[tid] = r.info.run_id
                self.numbers[tid] = int(r.data.tags.get("tuner.trial_number", "0"))
                self.last_step[tid] = int(r.data.tags.get("epochs_run", "0"))
                if self.metric and f"best_{self.metric}" in r.data.metrics:
                    self.best[tid] = (r.data.metrics[f"best_{self.metric}"], int(r.data.metrics.get("best_epoch", 0)))
                if r.data.tags.get("stop_reason"):
                    self.reasons[tid] = r.data.tags["stop_reason"]
                if r.info.status != "RUNNING" and r.data.tags.get("status"):
                    self.final[tid] = r.data.tags["status"]

    def setup(self, **info):
        self._existing_runs()

    def _run_name(self, number: int, config: Mapping[str, Any]) -> str:
        knobs = " ".join(f"{k}={fmt(config[k])}" for k in self.searched if k in config)
        return f"trial-{number:03d} {knobs}".strip()[:250]

    def run_id(self, trial) -> str | None:
        return self.runs.get(trial.trial_id)

    # -- Tune hooks ------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.runs:  # resumed trial: reopen its run
            self.safe(self.client.update_run, self.runs[trial.trial_id], status="RUNNING")
            self.safe(self.client.set_tag, self.runs[trial.trial_id], "status", "running")
            self.final.pop(trial.trial_id, None)
            return
        number = self._number(trial.trial_id)
        self.numbers[trial.trial_id] = number
        config = {k: v for k, v in trial.config.items()}
        tags = {
            "mlflow.parentRunId": self.parent,
            "tuner.trial_id": trial.trial_id,
            "tuner.trial_number": str(number),
            "status": "running",
            "loss": str(config.get("loss", "")),
            **self.base_tags,
        }
        if self.searcher is not None and self.searcher.number_of(trial.trial_id) is not None:
            tags["optuna.trial_number"] = str(number)
        name = self._run_name(number, config)
        run = self.safe(self.client.create_run, self.experiment_id, run_name=name, tags=tags)
        if run is None:
            return
        self.runs[trial.trial_id] = run.info.run_id
        self.safe(self.client.log_batch, run.info.run_id,
                   params=[Param(k, v) for k, v in flat_params(config).items()])
        if self.searcher is not None:  # optuna-dashboard users find the MLflow run from the trial
            self.searcher.link(trial.trial_id, mlflow_run_id=run.info.run_id, mlflow_run_name=name)

    def _number(self, trial_id: str) -> int:
        """One numbering a user can match by eye: the Optuna trial number when there is a study
        (0-based; continues across sweeps sharing a study), else 0, 1, 2, ... in start order."""
        ot = self.searcher.number_of(trial_id) if self.searcher is not None else None
        return ot if ot is not None else max(self.numbers.values(), default=-1) + 1

    def _best_so_far(self, trial_id: str, result: Mapping[str, Any], step: int) -> list[Metric]:
        """best_<metric> and best_epoch as of this epoch: the trial's score, logged on the child so
        that sorting children by it in the MLflow UI ranks them as trials.csv does."""
        v = result.get(self.metric) if self.metric else None
        if not isinstance(v, (int, float)) or v != v:
            return []
        prev = self.best.get(trial_id)
        better = prev is None or (v > prev[0] if self.mode == "max" else v < prev[0])
        if better:
            self.best[trial_id] = (float(v), step)
        value, epoch = self.best[trial_id]
        now = int(time.time() * 1000)
        return [Metric(f"best_{self.metric}", value, now, step), Metric("best_epoch", float(epoch), now, step)]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self.run_id(trial)
        if run_id is None:
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self.last_step.get(trial.trial_id, 0):
            # a restarted trial replays the epochs after its last saved checkpoint: log each epoch once
            return
        self.last_step[trial.trial_id] = step
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
        ] + self._best_so_far(trial.trial_id, result, step)
        device = result.get("device")  # 'cuda (CUDA_VISIBLE_DEVICES=1)' where Ray gave the trial a GPU
        self.safe(self.client.log_batch, run_id, metrics=metrics,
                   tags=[RunTag("epochs_run", str(step))]
                   + ([RunTag("device", str(device))] if device and device != "cpu" else []))

    def _ending(self, trial, ran: int, trials=()) -> tuple[str, str]:
        """(status, stop_reason) of a trial Tune ended without an error.

        Never "interrupted": Tune calls on_trial_complete only from stop_trial, which saves the trial
        TERMINATED, so `tuner resume` never runs it again; a Ctrl+C leaves running and waiting trials
        without this call (close_running marks those). A trial ASHA stops in the step Tune finishes
        after the Ctrl+C is stopped early, not interrupted (it was left KILLED for good)."""
        last = trial.last_result or {}
        if last.get("stop_reason"):  # the pathology stopper ended it (analysis/diagnose.py)
            return "pathology", str(last["stop_reason"])
        if ran >= self.epochs_of(trial.config):
            return "completed", ""
        ended = sweep_end(trials, budget=self.epoch_budget, target=self.stop_at, metric=self.metric, mode=self.mode)
        if ended:  # the sweep's budget or target ended it (tuner/stopper.py SweepEnd)
            return "stopped_early", ended
        # only an ASHA scheduler stops healthy trials early; FIFO never does
        return "stopped_early", (self.early_stopper or "stopped before its last epoch")

    def on_trial_complete(self, iteration, trials, trial, **info):
        stopper.trial_closed(self.sweep_end_key, trial.trial_id)
        run_id = self.run_id(trial)
        if run_id is None:
            return
        ran = int((trial.last_result or {}).get("epoch", 0))
        status, reason = self._ending(trial, ran, trials)
        tags = [RunTag("status", status), RunTag("epochs_run", str(ran))]
        if self.rungs:  # how far up ASHA's ladder the trial climbed (0 = never reached a rung)
            tags.append(RunTag("asha_rung", str(sum(ran >= r for r in self.rungs))))
        if reason:
            tags.append(RunTag("stop_reason", reason))
        self.final[trial.trial_id] = status
        self.reasons[trial.trial_id] = reason
        self.safe(self.client.log_batch, run_id, tags=tags)
        self.safe(self.client.set_terminated, run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        stopper.trial_closed(self.sweep_end_key, trial.trial_id)  # an ender that fails must not hold the sweep open
        run_id = self.run_id(trial)
        if run_id is None:
            return
        reason = error_reason(trial)
        self.final[trial.trial_id] = "errored"
        self.reasons[trial.trial_id] = reason[:500]
        self.safe(self.client.log_batch, run_id,
                   tags=[RunTag("status", "errored"), RunTag("stop_reason", reason[:500])])
        self.safe(self.client.set_terminated, run_id, "FAILED")

    def close_running(self) -> None:
        """At the end (or on interruption): no child run may stay RUNNING forever."""
        for tid, run_id in self.runs.items():
            run = self.safe(self.client.get_run, run_id)
            if run is not None and run.info.status == "RUNNING":
                self.final[tid] = "interrupted"
                self.safe(self.client.log_batch, run_id, tags=[RunTag("status", "interrupted")])
                self.safe(self.client.set_terminated, run_id, "KILLED")


_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Loss)): (.+)$")


def error_reason(trial) -> str:
    """The last 'SomeError: message' line of a trial's traceback ('non-finite loss at ...')."""
    text = ""
    try:  # Ray writes error.txt in the trial's local folder before calling on_trial_error
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        else:
            err = trial.get_error()
            text = str(err) if err else ""
    except Exception:  # noqa: BLE001 - no error file: fall back to a generic reason
        pass
    for line in reversed(text.splitlines()):
        m = _EXC_LINE.match(line.strip())
        if m and m.group(1) not in ("RayTaskError", "TuneError"):
            return m.group(2).strip()
    return text.strip().splitlines()[-1][:300] if text.strip() else "error"
