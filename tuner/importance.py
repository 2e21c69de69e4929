"""Which searched knobs mattered: Optuna's fANOVA (default) or PED-ANOVA on a sweep's study.

Both evaluators in Optuna 5.0 read COMPLETE trials only (optuna/importance/_base.py and
_ped_anova/evaluator.py filter on TrialState.COMPLETE); neither knows PRUNED. So
`include_pruned=True` builds a copy of the study in memory in which every PRUNED trial with an
intermediate value becomes COMPLETE with its LAST intermediate value (the epoch ASHA stopped
it at), and evaluates that copy. Read it as "what separates good from bad early", not as the
final-quality importance: a stopped trial's value comes from fewer epochs than the others'.

Conditional knobs (`when:` in the spec, e.g. n_negatives only for loss=bpr): fANOVA needs a
value for every knob in every trial, so it assesses the knobs every trial has and names the
skipped ones in `reason`; PED-ANOVA assesses them per regime (method="ped_anova").
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

METHODS = ("fanova", "ped_anova")
# Below this many COMPLETE trials a sweep prints why it has no importance instead of numbers:
# with 2-3 trials both evaluators return noise (issue 17 saw `lr 0.00` from 3 trials).
MIN_COMPLETE_TRIALS = 8


class Importances(dict):
    """{param: importance}, normalised to sum to 1, most important first; empty when it cannot
    be computed, with `reason` saying why (and, when not empty, what was left out)."""

    def __init__(self, values=(), *, reason: str = "", method: str = "", n_trials: int = 0, metric: str = ""):
        super().__init__(values)
        self.reason, self.method, self.n_trials, self.metric = reason, method, n_trials, metric


def _with_pruned(study: optuna.Study) -> optuna.Study:
    """A copy where PRUNED trials that reported something count as COMPLETE at their last value."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            copy.add_trial(t)
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            last = t.intermediate_values[max(t.intermediate_values)]
            copy.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=last, params=t.params,
                                                     distributions=t.distributions, user_attrs=t.user_attrs))
    return copy


def _evaluator(method: str, seed: int):
    if method == "ped_anova":
        return optuna.importance.PedAnovaImportanceEvaluator()
    try:  # fANOVA's random forest is scikit-learn's (present through mlflow); else fall back
        import sklearn.ensemble  # noqa: F401
    except ImportError:
        return None
    return optuna.importance.FanovaImportanceEvaluator(seed=seed)


def importance(study: optuna.Study | None, metric_name: str, *, include_pruned: bool = False,
               method: str = "fanova", seed: int = 0, min_trials: int = 2) -> Importances:
    """Importance of each searched param for the study's objective (`metric_name` labels it).

    Uses COMPLETE trials only unless `include_pruned` (see the module docstring). Returns an
    empty Importances with a reason for: no study, < max(2, min_trials) usable trials, no searched params,
    multi-objective studies, or an evaluator error.
    """
    if method not in METHODS:
        raise ValueError(f"importance: method must be one of {METHODS}, got {method!r}")
    out = lambda values=(), reason="", n=0, m=method: Importances(  # noqa: E731
        values, reason=reason, method=m, n_trials=n, metric=metric_name)
    if study is None:
        return out(reason="no Optuna study (a fixed-config run searches nothing)")
    if len(study.directions) != 1:
        return out(reason="multi-objective study: importance needs one objective")
    target = _with_pruned(study) if include_pruned else study
    trials = target.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(trials)
    kind = "complete or pruned-with-a-value" if include_pruned else "complete"
    if n < max(2, min_trials):
        return out(reason=f"{n} {kind} trial(s) of {metric_name}: importance needs at least {max(2, min_trials)}",
                   n=n)
    every = set.union(*(set(t.distributions) for t in trials))
    varied = {p for p in every if len({repr(t.params.get(p)) for t in trials}) > 1}
    if not varied:
        return out(reason="no searched parameter took more than one value", n=n)

    evaluator = _evaluator(method, seed)
    if evaluator is None:
        method, evaluator = "ped_anova", _evaluator("ped_anova", seed)
    skipped = []
    params = sorted(varied)
    if method == "fanova":  # fANOVA: only params every trial has
        params = [p for p in params if all(p in t.distributions for t in trials)]
        skipped = sorted(varied - set(params))
        if not params:
            return out(reason=f"every searched parameter is conditional ({', '.join(skipped)}): "
                              f"try method='ped_anova'", n=n, m=method)
    try:
        with warnings.catch_warnings():  # small studies make both evaluators chatty
            warnings.simplefilter("ignore")
            # PED-ANOVA ranks by study direction only when no target is given; fANOVA is direction-free
            # PED-ANOVA with params=None: the exact call optuna-dashboard makes (its default evaluator
            # in Optuna 5.x), so the numbers match the dashboard's for the same study
            values = optuna.importance.get_param_importances(
                target, evaluator=evaluator, params=None if method == "ped_anova" else params)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return out(reason=f"{method} failed: {str(e).splitlines()[0][:200]}", n=n, m=method)
    note = f"{method} on {n} {kind} trials" + (" (few trials: indicative only)" if n < 10 else "")
    if skipped:
        note += f"; conditional, not assessed: {', '.join(skipped)}"
    return out({k: float(v) for k, v in values.items()}, reason=note, n=n, m=method)
