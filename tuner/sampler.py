"""TPE with two options of ours: it learns from trials waiting at an asha_promote rung
(`search.paused_as_pruned: true`), and a share of its proposals are uniform draws (`search.random_fraction`).

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

random_fraction f (BOHB's `random_fraction`, 1/3 there; SMAC interleaves random configurations the
same way): once TPE's start-up is over, trial n is drawn uniformly when floor((n + 1) f) > floor(n f),
so exactly a share f of the later trials, evenly spaced (n = 2, 5, 8, ... for 1/3). A model fitted on
rung values follows fast starters (benchmarks/results/search_efficiency_32_g1r4_pp.md, repeat 0); the
uniform draws keep proposing the rest of the space. They come from their own RandomSampler, seeded
apart from TPE's, so the start-up draws (TPE's random sampler) are the ones they were without the option.
"""

from __future__ import annotations

import copy
from typing import Any, Container

from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState


class _PausedAsPruned:
    """A study as TPE reads it, where RUNNING trials with an intermediate value are PRUNED.

    `current` is the number of the trial being sampled (RUNNING, never shown as PRUNED)."""

    def __init__(self, study, current: int):
        self._study = study
        self._current = current

    def __getattr__(self, name: str) -> Any:  # everything else (directions, _storage, ...) is the study's
        return getattr(self._study, name)

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

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)


INTERLEAVE_SEED_OFFSET = 0x9E3779B9  # the uniform draws' seed is TPE's plus this (any fixed, distinct value)


class TunerTPESampler(TPESampler):
    """TPESampler with paused_as_pruned and random_fraction (module docstring); Optuna's options as Optuna's."""

    def __init__(self, *, paused_as_pruned: bool = False, random_fraction: float = 0.0, seed: int | None = None,
                 **tpe_options: Any):
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        super().__init__(seed=seed, **tpe_options)
        self._paused_as_pruned = paused_as_pruned
        self._random_fraction = random_fraction
        self._uniform = RandomSampler(seed=None if seed is None else (seed + INTERLEAVE_SEED_OFFSET) % 2**32)
        self._drawn_uniform: dict[int, bool] = {}  # trial number -> uniform, decided at its first draw

    def _view(self, study, trial: FrozenTrial):
        return _PausedAsPruned(study, trial.number) if self._paused_as_pruned else study

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
