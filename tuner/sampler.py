"""TPE that also learns from trials waiting at an asha_promote rung (`search.paused_as_pruned: true`).

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
"""

from __future__ import annotations

import copy
from typing import Any, Container

from optuna.samplers import TPESampler
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


class PausedAwareTPESampler(TPESampler):
    """TPESampler whose start-up count and density fit include paused trials (module docstring)."""

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict[str, Any]:
        return super().sample_relative(_PausedAsPruned(study, trial.number), trial, search_space)

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution) -> Any:
        return super().sample_independent(_PausedAsPruned(study, trial.number), trial, param_name,
                                          param_distribution)
