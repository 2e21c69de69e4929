"""TPE with three options of ours: it learns from trials waiting at an asha_promote rung
(`search.paused_as_pruned: true`), it models the largest rung with enough results, as BOHB does
(`search.largest_rung: true`), and a share of its proposals are uniform draws (`search.random_fraction`).
A fourth, BOHB's size of TPE's good group (`search.gamma: bohb`), is `bohb_gamma` below, passed to
Optuna's TPESampler as its gamma.

Under asha_promote a trial that reaches a rung waits there, RUNNING to Optuna, until enough trials
have arrived to rank it. Stock TPE fits only COMPLETE and PRUNED trials, so for most of a sweep it
sees the trials already ruled out (the worst at the first rung) and the few that ran to the end,
never the ones waiting with the best rung values; and its random start-up lasts until
n_startup_trials trials have *finished*: past 16 trials in every stored repeat of
benchmarks/results/search_efficiency_32_g1r4.md, with n_startup_trials 10.

Here, while TPE samples, every other RUNNING trial that has reported an epoch counts as PRUNED at
its last reported epoch. Optuna ranks pruned trials by the epoch they reached, then by their value
there, and all below COMPLETE ones: the good group is the trials that got furthest and led there,
close to BOHB's model of the largest budget with enough results (Falkner et al. 2018). The view is
read-only: nothing is written to the study, and the trial is told its real state at its end.

largest_rung (BOHB's model, Falkner et al. 2018, sec. 3.2: fit the densities on the largest budget
with at least d + 1 results, d = the number of knobs): Optuna ranks every COMPLETE trial above every
PRUNED one, so a trial that ran to the end with a poor score sits in TPE's good group ahead of one
that led at epoch 4 and was paused there; in benchmarks/results/search_efficiency_32_g1r4_c1.md,
repeat 0, one such trial (dim 16, 0.0258) held the good group and TPE proposed dim 16 from then on.
With the option, while TPE samples, b = the largest epoch that at least d + 1 finished trials have
reported; each trial that reached b shows as COMPLETE with its best value up to epoch b, and every
other trial as PRUNED (ranked below them, by Optuna's pruned order). Before any epoch has d + 1
results, TPE sees the study as it is. Read-only, like paused_as_pruned (and applied after it).
Measured on Beauty beside paused_as_pruned (docs/search_efficiency.md): 4 of 5 repeats met, as with plain
TPE but a different one missed; ranked at epochs 1 and 4 it still follows the fast starters.

random_fraction f (BOHB's `random_fraction`, 1/3 there; SMAC interleaves random configurations the
same way): once TPE's start-up is over, trial n is drawn uniformly when floor((n + 1) f) > floor(n f),
so exactly a share f of the later trials, evenly spaced (n = 2, 5, 8, ... for 1/3). A model fitted on
rung values follows fast starters (benchmarks/results/search_efficiency_32_g1r4_pp.md, repeat 0); the
uniform draws keep proposing the rest of the space. They come from their own RandomSampler, seeded
apart from TPE's, so the start-up draws (TPE's random sampler) are the ones they were without the option.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, Container

from optuna.samplers import RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class _StudyView:
    """A read-only view of a study for TPE: subclasses change _get_trials; the rest is the study's."""

    def __init__(self, study):
        self._study = study

    def __getattr__(self, name: str) -> Any:  # everything else (directions, _storage, ...) is the study's
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)


class _PausedAsPruned(_StudyView):
    """A study as TPE reads it, where RUNNING trials with an intermediate value are PRUNED.

    `current` is the number of the trial being sampled (RUNNING, never shown as PRUNED)."""

    def __init__(self, study, current: int):
        super().__init__(study)
        self._current = current

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        # RUNNING trials are read afresh (use_cache=False): the cache holds finished trials only,
        # and a paused trial's newest epoch is what ranks it
        seen = [t for t in self._study._get_trials(deepcopy=False, states=(TrialState.RUNNING,), use_cache=False)
                if t.intermediate_values and t.number != self._current]
        shown = []
        for t in seen:
            t = copy.deepcopy(t) if deepcopy else copy.copy(t)
            t.state = TrialState.PRUNED
            shown.append(t)
        numbers = {t.number for t in shown}
        trials = [t for t in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
                  if t.number not in numbers]
        if states is None or TrialState.PRUNED in states:
            trials = sorted(trials + shown, key=lambda t: t.number)
        return trials

class _LargestRung(_StudyView):
    """A study as BOHB's model reads it: trials ranked by their value at the largest epoch that at
    least d + 1 finished trials reached (module docstring). `study` may be a _PausedAsPruned view."""

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        asked = None if states is None else tuple(set(states) | set(finished))
        trials = self._study._get_trials(deepcopy=deepcopy, states=asked, use_cache=use_cache)
        budget = largest_rung([t for t in trials if t.state in finished])
        shown = [self._shown(t, budget) if t.state in finished else t for t in trials]
        return [t for t in shown if states is None or t.state in states]

    def _shown(self, trial: FrozenTrial, budget: int | None) -> FrozenTrial:
        if budget is None:
            return trial
        # best up to the budget: a trial's score is its best epoch (searcher.py), here capped at b
        values = [v for step, v in trial.intermediate_values.items() if step <= budget and v == v]
        reached = budget in trial.intermediate_values and bool(values)
        state = TrialState.COMPLETE if reached else TrialState.PRUNED
        if state == trial.state and not reached:
            return trial
        best = max if self._study.direction == StudyDirection.MAXIMIZE else min
        shown = copy.copy(trial)  # shallow: the cached trial is never changed
        shown.state = state
        shown.values = [best(values)] if reached else None
        return shown


def largest_rung(trials: list[FrozenTrial]) -> int | None:
    """The largest epoch with a result from at least d + 1 of `trials` (d = knobs they set), else None."""
    needed = len({name for t in trials for name in t.params}) + 1
    reached = Counter(step for t in trials for step in t.intermediate_values)
    return max((step for step, n in reached.items() if n >= needed), default=None)


def bohb_gamma(n: int, *, knobs: int) -> int:
    """How many of n trials form TPE's good group under `search.gamma: bohb`: BOHB's rule
    (hpbandster's config generator: max(min_points_in_model, top_n_percent * n // 100), with
    min_points_in_model = d + 1 and top_n_percent = 15), capped at n. Optuna's default is
    min(ceil(0.1 n), 25): 2 or 3 trials at 20-30, so one model size leading at the early rungs fills
    the group and TPE proposes it from then on (docs/search_efficiency.md); BOHB fits its KDE on at
    least d + 1 points, and the wider group was meant to hold more than one model size. Measured on
    Beauty beside multivariate, paused_as_pruned and largest_rung (docs/search_efficiency.md): 4 of 5
    repeats met, as without it, another one missed: the proposals still followed one model size."""
    return min(n, max(knobs + 1, 15 * n // 100))


INTERLEAVE_SEED_OFFSET = 0x9E3779B9  # the uniform draws' seed is TPE's plus this (any fixed, distinct value)


class TunerTPESampler(TPESampler):
    """TPESampler with paused_as_pruned, largest_rung and random_fraction (module docstring); Optuna's
    options as Optuna's."""

    def __init__(self, *, paused_as_pruned: bool = False, largest_rung: bool = False, random_fraction: float = 0.0,
                 seed: int | None = None, **tpe_options: Any):
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        super().__init__(seed=seed, **tpe_options)
        self._paused_as_pruned = paused_as_pruned
        self._largest_rung = largest_rung
        self._random_fraction = random_fraction
        self._uniform = RandomSampler(seed=None if seed is None else (seed + INTERLEAVE_SEED_OFFSET) % 2**32)
        self._drawn_uniform: dict[int, bool] = {}  # trial number -> uniform, decided at its first draw

    def _view(self, study, trial: FrozenTrial):
        view = _PausedAsPruned(study, trial.number) if self._paused_as_pruned else study
        # getattr: a sampler pickled in a searcher checkpoint before the option existed
        return _LargestRung(view) if getattr(self, "_largest_rung", False) else view

    def _is_uniform(self, view, trial: FrozenTrial) -> bool:
        n, f = trial.number, self._random_fraction
        if n in self._drawn_uniform:
            return self._drawn_uniform[n]
        # + 1e-6: a fraction written in decimals (0.3333333333 for 1/3) keeps 1/3's spacing
        if f == 0.0 or int((n + 1) * f + 1e-6) == int(n * f + 1e-6):
            return False
        seen = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        # in TPE's start-up the trial takes TPE's own random draws, as without the option
        self._drawn_uniform[n] = len(seen) >= self._n_startup_trials
        return self._drawn_uniform[n]

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._uniform.reseed_rng()

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict[str, Any]:
        view = self._view(study, trial)
        if self._is_uniform(view, trial):
            return {}  # every knob then comes from sample_independent
        return super().sample_relative(view, trial, search_space)

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution) -> Any:
        view = self._view(study, trial)
        if self._is_uniform(view, trial):
            return self._uniform.sample_independent(study, trial, param_name, param_distribution)
        return super().sample_independent(view, trial, param_name, param_distribution)
