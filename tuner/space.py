"""Spec space -> an Optuna define-by-run function (what OptunaSearch and plain Optuna both take).

Knobs are suggested in YAML order; a knob with `when:` is suggested only if the knobs it
refers to took one of the listed values, so TPE never sees a meaningless parameter.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from tuner.spec import Param, Spec


def active(p: Param, chosen: Mapping[str, Any]) -> bool:
    return all(chosen.get(ref) in values for ref, values in p.when)


def suggest(trial, p: Param) -> Any:
    if p.type == "float":
        return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
    if p.type == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return trial.suggest_categorical(p.name, list(p.choices))


class DefineByRun:
    """trial -> the fixed knobs; the searched ones are recorded through trial.suggest_*.

    A class, not a closure: Ray pickles the searcher (and this) into its experiment state.
    """

    def __init__(self, spec: Spec):
        self.fixed = dict(spec.fixed)
        self.params = spec.space

    def __call__(self, trial) -> dict[str, Any]:
        chosen: dict[str, Any] = dict(self.fixed)
        for p in self.params:
            if active(p, chosen):
                chosen[p.name] = suggest(trial, p)
        return dict(self.fixed)


def define_by_run(spec: Spec) -> Callable[[Any], dict[str, Any]]:
    return DefineByRun(spec)


def sample(spec: Spec, trial) -> dict[str, Any]:
    """The full trial config (fixed + searched) for a plain optuna.Trial."""
    fixed = define_by_run(spec)(trial)
    return {**trial.params, **fixed}
