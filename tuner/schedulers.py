"""ASHA with promotions (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning", Alg. 2).

Ray's ASHAScheduler decides when a trial arrives at a rung: it continues if its value is at or above
the (1 - 1/rf) quantile of the values that *earlier* trials recorded there, so the first arrival at
every rung always continues. On Beauty BPR-MF (benchmarks/results/search_efficiency.md, repeat 1) the
first two trials, hopeless low learning rates, ran 20 and 18 of 20 epochs because of it.

Here (`scheduler: {type: asha_promote}`) a trial that reaches a rung pauses: its checkpoint is kept and
its CPU goes to the next trial. A paused trial resumes only once it ranks in the top floor(n / rf) of
the n trials that have reached that rung, so nobody is promoted before rf trials have been compared.
A trial that can no longer make that cut, whatever arrives later, is stopped at once (Optuna hears
of it as PRUNED while the sweep still runs); when no trial is running or left to start, the trials
still waiting are stopped. `Rungs` is the bookkeeping (no Ray, tested on its own); `PromotionASHA`
and `PauseAwareLimiter` wire it into Ray Tune.

With `brackets: B` > 1 (Hyperband's brackets, as in BOHB and Ray's AsyncHyperBand) bracket s is its
own `Rungs` over the milestones from rung s on: its trials first meet a comparison at a later epoch, so
a config that starts slowly is judged there. Ray draws a trial's bracket at random; here the sweep's n-th
trial (in the order Ray adds them, which a resume repeats) goes to bracket `bracket_plan(...)[n]`, a
fixed sequence with Ray's shares (e^-s), so a sweep at concurrency 1 is one fixed outcome.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from tuner import raycompat


class Rebase:
    """Scheduler mixin: on `tuner resume --storage`, every trial added is pointed at the storage's
    new place (raycompat.rebase_trial_storage says why Ray alone leaves new trials at the old one).
    `target` is (storage_path, experiment name), set on the restored scheduler by the resume."""

    target: tuple[str, str] | None = None

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if self.target is not None:
            raycompat.rebase_trial_storage(trial, *self.target)
        super().on_trial_add(tune_controller, trial)


class Asha(Rebase, ASHAScheduler):
    pass


class Fifo(Rebase, FIFOScheduler):
    pass


class Rungs:
    """Values recorded at each rung, and who is promoted, waiting or out.

    milestones: epochs at which trials are compared, ascending; a trial promoted from the last one
    runs to its end. samples: how many trials the sweep starts, which bounds every rung's population.
    """

    def __init__(self, milestones: Sequence[int], reduction_factor: float, samples: int, mode: str = "max"):
        self.milestones = tuple(int(m) for m in milestones)
        self.rf = float(reduction_factor)
        self.samples = int(samples)
        self.sign = 1.0 if mode == "max" else -1.0
        self.values: list[dict[str, float]] = [{} for _ in self.milestones]  # rung -> trial -> signed value
        self.promoted: list[set[str]] = [set() for _ in self.milestones]
        self.out: dict[str, int] = {}  # trial -> the rung it was stopped at; never promoted again

    def index(self, epoch: int) -> int | None:
        return self.milestones.index(epoch) if epoch in self.milestones else None

    def knows(self, trial_id: str) -> bool:
        return any(trial_id in v for v in self.values)

    def ranked(self, k: int) -> list[str]:
        """Rung k's trials, best first (ties: earlier arrival first)."""
        vals = self.values[k]
        return sorted(vals, key=lambda t: -vals[t])

    def quota(self, k: int) -> int:
        """How many of rung k's best may be promoted now: floor(n / rf) of its n trials."""
        return math.floor(len(self.values[k]) / self.rf + 1e-9)

    def cap(self, k: int) -> int:
        """Most trials rung k can ever hold: all but those stopped below it. Only shrinks."""
        return self.samples - sum(1 for r in self.out.values() if r < k)

    def record(self, k: int, trial_id: str, value: float) -> list[str]:
        """Record `trial_id` at rung k; return the trials (it may be one) that can no longer be promoted:
        a trial's rank only worsens as trials arrive, and the quota never exceeds floor(cap / rf)."""
        v = self.sign * float(value)
        self.values[k][trial_id] = v if not math.isnan(v) else -math.inf
        best_possible = math.floor(self.cap(k) / self.rf + 1e-9)
        hopeless = [t for t in self.ranked(k)[best_possible:] if t not in self.promoted[k] and t not in self.out]
        self.out.update({t: k for t in hopeless})
        return hopeless

    def promotable(self, k: int) -> list[str]:
        """Rung k's trials inside its current quota, not yet promoted, best first (the paper's rule: a
        trial promoted early that later drops out of the top does not use up a place)."""
        return [t for t in self.ranked(k)[: self.quota(k)] if t not in self.promoted[k] and t not in self.out]

    def promote(self, k: int, trial_id: str) -> None:
        self.promoted[k].add(trial_id)

    def replay(self, histories: Mapping[str, Mapping[int, tuple[float, float]]]) -> None:
        """Rebuild the bookkeeping of an interrupted sweep from what its trials logged:
        histories[trial] = {epoch: (timestamp, value)}. Rung arrivals are recorded in time order, as
        they first happened, so the same trials are promoted, waiting or out; a trial that logged an
        epoch past a rung was promoted from it."""
        arrivals = sorted((h[m][0], k, tid) for tid, h in histories.items()
                          for k, m in enumerate(self.milestones) if m in h)
        for _, k, tid in arrivals:
            self.record(k, tid, histories[tid][self.milestones[k]][1])
            if max(histories[tid]) > self.milestones[k] and tid not in self.out:
                self.promote(k, tid)

    def waiting(self) -> list[tuple[int, str]]:
        """(rung, trial) for trials recorded at a rung, neither promoted from it nor out."""
        return [(k, t) for k in range(len(self.milestones)) for t in self.values[k]
                if t not in self.promoted[k] and t not in self.out]


def bracket_plan(n: int, brackets: int) -> list[int]:
    """The brackets of trials 0..n-1: shares proportional to e^-s (Ray's AsyncHyperBand weights: e to
    the number of rungs a bracket has, relative to the first), dealt in order, each trial going to the
    bracket furthest below its share so far (ties: the earlier bracket). 2 brackets: 0, 1, 0, 0, 0, 1, 0, 0, ..."""
    weights = [math.exp(-s) for s in range(brackets)]
    shares = [w / sum(weights) for w in weights]
    counts, plan = [0] * brackets, []
    for i in range(n):
        s = max(range(brackets), key=lambda b: (shares[b] * (i + 1) - counts[b], -b))
        counts[s] += 1
        plan.append(s)
    return plan


def make_brackets(milestones: Sequence[int], reduction_factor: float, samples: int, brackets: int,
                  mode: str = "max") -> tuple[list[int], list[Rungs], list[tuple[int, int]]]:
    """(plan, rungs, ladder): each trial's bracket, one `Rungs` per bracket (bracket s from milestone s on,
    bounded by the trials the plan deals it), and every (bracket, rung) from the highest epoch down, the
    order promotions are taken in (the paper's get_job, over all brackets)."""
    plan = bracket_plan(samples, brackets)
    rungs = [Rungs(tuple(milestones)[s:], reduction_factor, plan.count(s), mode) for s in range(brackets)]
    ladder = sorted(((m, s, k) for s, r in enumerate(rungs) for k, m in enumerate(r.milestones)), reverse=True)
    return plan, rungs, [(s, k) for _, s, k in ladder]


class PauseAwareLimiter(ConcurrencyLimiter):
    """ConcurrencyLimiter that counts running trials only: a paused trial holds no CPU, so it must not
    hold one of the `max_concurrent` slots either (else two paused trials would block the sweep)."""

    def __init__(self, searcher, max_concurrent: int):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.paused: set[str] = set()

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if trial_id in self.live_trials:
            self.paused.discard(trial_id)
        return config

    def pause(self, trial_id: str) -> None:
        if trial_id in self.live_trials:
            self.live_trials.discard(trial_id)
            self.paused.add(trial_id)

    def adopt(self, trial_id: str) -> None:
        """A trial restored by `tuner resume` (Ray saves the searcher inside, not this wrapper's sets):
        held as paused, so that its end still reaches the searcher and its start takes a slot. A trial
        the searcher just suggested is live already: nothing changes."""
        if trial_id not in self.live_trials:
            self.paused.add(trial_id)

    def resume(self, trial_id: str) -> None:
        if trial_id in self.paused:
            self.paused.discard(trial_id)
            self.live_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self.paused:  # stopped while paused: the searcher must still hear of it
            self.paused.discard(trial_id)
            self.live_trials.add(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)


class PromotionASHA(Rebase, FIFOScheduler):
    """Ray Tune scheduler over `Rungs`. time_attr is the trainable's own epoch counter, which a
    trial restored from its checkpoint continues (training_iteration would restart)."""

    def __init__(self, *, metric: str, mode: str, milestones: Sequence[int], reduction_factor: float,
                 samples: int, limiter: PauseAwareLimiter | None = None, time_attr: str = "epoch",
                 brackets: int = 1):
        super().__init__()
        self._score, self._time_attr = metric, time_attr  # our own: Ray's TrialScheduler keeps _metric
        self._plan, self.brackets, self._ladder = make_brackets(milestones, reduction_factor, samples, brackets, mode)
        self.bracket_of: dict[str, int] = {}  # trial -> its bracket
        self._limiter = limiter
        self._added = 0

    @property
    def rungs(self) -> Rungs:
        """The first bracket's rungs (the only ones unless brackets > 1)."""
        return self.brackets[0]

    def _bracket(self, n: int) -> int:
        return self._plan[n] if n < len(self._plan) else 0  # beyond the planned samples: the first

    def rungs_of(self, trial_id: str) -> Rungs:
        return self.brackets[self.bracket_of.get(trial_id, 0)]

    @property
    def metric(self) -> str:
        return self._score

    @property
    def supports_buffered_results(self) -> bool:
        return False  # a pause must land on the rung's own result (as HyperBand)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode come from the spec, at construction

    def restore(self, histories: Mapping[str, Mapping[int, tuple[float, float]]],
                numbers: Mapping[str, int] | None = None) -> None:
        """`tuner resume`: Ray restores trials but not a scheduler's state (the one in tuner.pkl is the
        sweep's first, empty). Rebuilt from the trials' logged epochs (Rungs.replay), trials waiting
        at a rung keep waiting and trials ruled out stay out, instead of all resuming from their rung.
        numbers: each trial's number (MLflow's tuner.trial_number): their order is the order the sweep
        added its trials in, which names their brackets (a study shared with other sweeps may number
        them from any start)."""
        order = sorted(histories, key=lambda tid: (numbers or {}).get(tid, 0))
        for n, tid in enumerate(order):
            self.bracket_of[tid] = self._bracket(n) if numbers else 0
        for s, rungs in enumerate(self.brackets):
            rungs.replay({tid: h for tid, h in histories.items() if self.bracket_of[tid] == s})

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        # restored trials come back in the order they were added, so a trial that never logged an epoch
        # gets the bracket it had; the others were placed by restore
        self.bracket_of.setdefault(trial.trial_id, self._bracket(self._added))
        self._added += 1
        if self._limiter is not None and trial.status == Trial.PENDING:
            self._limiter.adopt(trial.trial_id)  # restored: no slot until it runs again (new ones: no-op)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self._score not in result or self._time_attr not in result:
            return TrialScheduler.CONTINUE
        tid = trial.trial_id
        rungs = self.rungs_of(tid)
        k = rungs.index(int(result[self._time_attr]))
        if k is None:
            return TrialScheduler.CONTINUE
        if tid not in rungs.values[k]:  # first arrival (a restored trial replaying its rung: seen)
            # get_trials, not get_trial: a scheduler may only call the first (Ray warns about the second)
            by_id = {t.trial_id: t for t in tune_controller.get_trials()}
            for other in rungs.record(k, tid, result[self._score]):
                t = by_id.get(other)
                if other != tid and t is not None and t.status == Trial.PAUSED:
                    tune_controller.stop_trial(t)
        if tid in rungs.out:
            return TrialScheduler.STOP
        if tid in rungs.promoted[k]:
            return TrialScheduler.CONTINUE
        if tid in rungs.promotable(k):  # already inside the quota: go on without a pause
            rungs.promote(k, tid)
            return TrialScheduler.CONTINUE
        if self._limiter is not None:
            self._limiter.pause(tid)
        return TrialScheduler.PAUSE

    def _start(self, t: Trial) -> Trial:
        if self._limiter is not None:
            self._limiter.resume(t.trial_id)  # a waiting or restored trial takes its slot back
        return t

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        # trials that wait at a rung: PAUSED, or PENDING after `tuner resume` (Ray requeues paused trials)
        waiting = {tid for rungs in self.brackets for _, tid in rungs.waiting()}
        held = (Trial.PAUSED, Trial.PENDING)
        # 0. a trial ruled out while its pause was still being saved, or before the sweep was resumed
        for t in trials:
            if t.status in held and t.trial_id in self.rungs_of(t.trial_id).out:
                tune_controller.stop_trial(t)
        # 1. promotions first, from the highest rung (epoch) down, over all brackets (the paper's get_job)
        for s, k in self._ladder:
            for tid in self.brackets[s].promotable(k):
                t = by_id.get(tid)
                if t is not None and t.status in held:
                    self.brackets[s].promote(k, tid)
                    return self._start(t)
        # 2. then new trials (and restored ones that were running between rungs)
        for t in trials:
            if t.status == Trial.PENDING and t.trial_id not in waiting:
                return self._start(t)
        # 3. a paused trial this scheduler never saw (a restored sweep) resumes as under FIFO
        for t in trials:
            if t.status == Trial.PAUSED and not self.rungs_of(t.trial_id).knows(t.trial_id):
                return self._start(t)
        # 4. nothing runs and nothing is left to start: no rung can grow, so the waiting are out
        startable = any(t.status == Trial.RUNNING or (t.status == Trial.PENDING and t.trial_id not in waiting)
                        for t in trials)
        if self._added >= len(self._plan) and not startable:
            for rungs in self.brackets:
                for k, tid in rungs.waiting():
                    rungs.out[tid] = k
                    t = by_id.get(tid)
                    if t is not None and t.status in held:
                        tune_controller.stop_trial(t)
        return None

    def debug_string(self) -> str:
        def counts(rungs: Rungs) -> str:
            return ", ".join(f"{m}: {len(v)} ({len(p)} promoted)"
                             for m, v, p in zip(rungs.milestones, rungs.values, rungs.promoted)) or "-"
        if len(self.brackets) == 1:
            return f"ASHA with promotions, rungs at epochs {counts(self.rungs)}"
        return "ASHA with promotions, " + "; ".join(f"bracket {s}: {counts(r)}" for s, r in enumerate(self.brackets))
