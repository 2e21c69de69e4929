"""Ray Tune stoppers: a trial ends when analysis.diagnose finds a pathology in its history, or (`tuner
compare`'s `patience`) when its validation metric has stopped improving; a sweep ends when its
trials have spent `search.epoch_budget` epochs in all, or one of them reached `search.stop_at`."""

from __future__ import annotations

import math
import uuid
from typing import Any

from ray.tune.stopper import Stopper

from analysis.diagnose import DiagnoseConfig, PathologyWatch


class PathologyStopper(Stopper):
    """Stop a trial as soon as `analysis.diagnose.PathologyWatch` says so.

    Pass as `tune.RunConfig(stop=PathologyStopper(metric, mode, cfg))`. Ray calls it on the driver
    with every result before the callbacks; when it fires, `reasons[trial_id]` holds the Diagnosis
    and the result itself gets `stop_reason = str(diagnosis)`, which becomes trial.last_result, so
    TrialRuns.on_trial_complete's `last.get("stop_reason")` tags it.
    """

    def __init__(self, metric: str, mode: str = "max", cfg: DiagnoseConfig = DiagnoseConfig(),
                 reference: float | None = None):
        self.watch = PathologyWatch(metric, mode, cfg, reference)
        self.reasons = self.watch.reasons  # trial_id -> Diagnosis

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.watch.observe(trial_id, result) is not None

    def stop_all(self) -> bool:
        return False


class PatienceStopper(Stopper):
    """Early stopping per trial: stop once `metric` has not improved for `patience` reported epochs.

    `tuner compare`'s claim key `patience: N`; the config's `epochs` stays the cap. An epoch improves
    when its value is strictly better than every earlier one (a non-finite or missing value never
    does). Epochs are the results' `epoch` (1, 2, ...; else counted), so a trial restarted from a
    checkpoint is not double-counted. `epochs_run[trial_id]` is the last epoch seen, `stopped` the
    trials it ended.
    """

    def __init__(self, metric: str, mode: str = "max", patience: int = 5):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.best: dict[str, tuple[float, int]] = {}  # trial_id -> (best value, its epoch)
        self.epochs_run: dict[str, int] = {}
        self.stopped: set[str] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        epoch = result.get("epoch")
        epoch = int(epoch) if isinstance(epoch, (int, float)) else self.epochs_run.get(trial_id, 0) + 1
        self.epochs_run[trial_id] = epoch
        value = result.get(self.metric)
        best, best_epoch = self.best.get(trial_id, (None, 0))
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                best is None or (value > best if self.mode == "max" else value < best)):
            self.best[trial_id] = (float(value), epoch)
            return False
        if epoch - best_epoch >= self.patience:
            self.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return False


_FLOORS: dict[str, dict[str, int]] = {}  # SweepEnd.key -> epochs per trial counted by `tuner resume`
_CLOSED: dict[str, set[str]] = {}  # SweepEnd.key -> trials Tune has ended gracefully (TrialRuns tells)


def reaches(value: float, target: float, mode: str) -> bool:
    """Whether a metric value reaches a target: >= for mode max, <= for min."""
    return value >= target if mode == "max" else value <= target


def trial_closed(key: str | None, trial_id: str) -> None:
    """Tune ended this trial through its graceful path (its last checkpoint saved); TrialRuns calls it."""
    if key:
        _CLOSED.setdefault(key, set()).add(trial_id)


class SweepEnd(Stopper):
    """End the whole sweep at its epoch budget (`search.epoch_budget`: once its trials have run
    `budget` epochs in all) or at its target (`search.stop_at`: once a trial's `metric` reaches
    `target`, >= for mode max, <= for min), whichever comes first.

    Wraps the sweep's per-trial stopper (`inner`, or None) so Tune gets one stopper. A trial's
    epochs are the largest `epoch` it reported (else its results counted), so a trial resumed from
    a checkpoint or promoted from a rung is not counted twice. Tune asks `stop_all` after each
    result: with one trial at a time the sweep ends on that very epoch; with c trials at once up to
    c - 1 more epochs run (results already on their way).

    Two steps, so no checkpoint is lost: the trial whose result reaches the limit (`ender`) stops as
    a trial, which lets Tune save that result's checkpoint (it may be the sweep's best) before it
    calls the callbacks; only once TrialRuns has seen it end (`trial_closed`) does `stop_all` end
    the rest (Tune's stop_all cancels a save in flight: TuneController._schedule_trial_stop).

    `tuner resume`: Tune runs the copy of this stopper saved in its experiment state, which may
    predate the last epochs; `restore` (called on the Tuner's own copy) leaves the epochs counted
    from MLflow under this stopper's `key`, and the copy Tune runs (same key) takes them in.
    """

    def __init__(self, inner: Stopper | None = None, *, budget: int | None = None, target: float | None = None,
                 metric: str = "", mode: str = "max"):
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1 epoch, got {budget}")
        if target is not None and not metric:
            raise ValueError("a target needs the metric it is a value of")
        self.inner, self.budget, self.target, self.metric, self.mode = inner, budget, target, metric, mode
        self.epochs_run: dict[str, int] = {}  # trial_id -> epochs it has run
        self.reached = False  # a trial's metric reached the target
        self.ender: str | None = None  # the trial whose result reached the limit
        self.key = uuid.uuid4().hex  # pickled along: every copy of this stopper shares it

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self._take_floor()
        epoch = result.get("epoch")
        ran = self.epochs_run.get(trial_id, 0)
        self.epochs_run[trial_id] = max(ran, int(epoch)) if isinstance(epoch, (int, float)) else ran + 1
        value = result.get(self.metric)
        if self.target is not None and isinstance(value, (int, float)) and math.isfinite(value):
            self.reached |= reaches(value, self.target, self.mode)
        stop = bool(self.inner(trial_id, result)) if self.inner is not None else False
        if (self.spent or self.reached) and self.ender is None:
            self.ender = trial_id
        return stop or self.spent or self.reached  # past the limit every reporting trial stops as a trial

    def restore(self, epochs_run: dict[str, int]) -> None:
        """`tuner resume`: the epochs each trial ran before (from its MLflow history)."""
        _FLOORS[self.key] = {tid: int(ran) for tid, ran in epochs_run.items()}
        self._take_floor()

    def _take_floor(self) -> None:
        for tid, ran in _FLOORS.get(self.key, {}).items():
            self.epochs_run[tid] = max(self.epochs_run.get(tid, 0), ran)

    @property
    def used(self) -> int:
        return sum(self.epochs_run.values())

    @property
    def spent(self) -> bool:
        return self.budget is not None and self.used >= self.budget

    def stop_all(self) -> bool:
        self._take_floor()
        if self.spent or self.reached:  # the rest, once the ender's checkpoint is saved (class docstring)
            if self.ender is None or self.ender in _CLOSED.get(self.key, ()):
                return True
        return self.inner is not None and self.inner.stop_all()

    def __getattr__(self, name: str) -> Any:  # the inner stopper's own attributes (PathologyStopper.reasons)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)
