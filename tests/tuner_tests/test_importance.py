"""Parameter importance on hand-made Optuna studies whose truth is known."""

import random

import optuna
import pytest

from tuner.importance import Importances, importance

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_study(n=40, prune_every=4, conditional=False, seed=0):
    """value depends on x only; y is noise. Every `prune_every`-th trial is told PRUNED after
    reporting two intermediate values (like an ASHA stop at epoch 2)."""
    rng = random.Random(seed)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for i in range(n):
        t = study.ask()
        x = t.suggest_float("x", 1e-4, 1e-1, log=True)
        t.suggest_float("y", 0.0, 1.0)
        if conditional:
            if t.suggest_categorical("loss", ["bpr", "ce"]) == "bpr":
                t.suggest_int("n_negatives", 1, 8)
        value = 1.0 - abs(__import__("math").log10(x) + 2.0) / 2.0 + rng.gauss(0, 0.01)
        if prune_every and i % prune_every == 0:
            t.report(value * 0.5, 1)
            t.report(value * 0.8, 2)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, value)
    return study


def test_x_gets_most_importance_y_little():
    study = make_study()
    imp = importance(study, "val_ndcg_10")
    assert isinstance(imp, Importances) and isinstance(imp, dict) and imp.method == "fanova"
    assert set(imp) == {"x", "y"} and imp["x"] > 0.8 and imp["y"] < 0.2
    assert imp.n_trials == 30 and "30 complete trials" in imp.reason
    assert list(imp) == ["x", "y"]  # most important first


def test_include_pruned_uses_last_intermediate_value():
    study = make_study()
    imp = importance(study, "val_ndcg_10", include_pruned=True)
    assert imp.n_trials == 40 and imp["x"] > 0.8
    assert len(study.trials) == 40 and sum(t.state.name == "PRUNED" for t in study.trials) == 10  # untouched


def test_ped_anova_agrees_on_x():
    imp = importance(make_study(n=60), "val_ndcg_10", method="ped_anova")
    assert imp.method == "ped_anova" and imp["x"] > imp["y"]


def test_no_study_and_single_valued_params():
    imp = importance(None, "val_ndcg_10")
    assert imp == {} and "no Optuna study" in imp.reason
    study = optuna.create_study()
    for _ in range(3):
        t = study.ask()
        t.suggest_categorical("loss", ["bpr"])
        study.tell(t, 1.0)
    imp = importance(study, "val_ndcg_10")
    assert imp == {} and "more than one value" in imp.reason


def test_fewer_than_two_complete_trials():
    study = make_study(n=3, prune_every=1)  # every trial pruned
    imp = importance(study, "val_ndcg_10")
    assert imp == {} and "0 complete trial(s)" in imp.reason and "at least 2" in imp.reason
    assert importance(study, "val_ndcg_10", include_pruned=True).n_trials == 3


def test_conditional_params_are_named_not_fatal():
    study = make_study(conditional=True)
    imp = importance(study, "val_ndcg_10")
    assert "n_negatives" not in imp and "conditional, not assessed: n_negatives" in imp.reason
    assert imp["x"] == max(imp.values())
    ped = importance(study, "val_ndcg_10", method="ped_anova")
    assert "n_negatives" in ped and ped["x"] == max(ped.values())


def test_bad_method_raises():
    with pytest.raises(ValueError, match="method"):
        importance(make_study(n=4), "m", method="shap")


def test_sweep_importance_is_optuna_dashboards_default_and_needs_enough_trials():
    """What a sweep prints (PED-ANOVA, COMPLETE trials) equals optuna-dashboard's call
    get_param_importances(study) with Optuna's default evaluator; below MIN_COMPLETE_TRIALS COMPLETE
    trials it gives no numbers and says why."""
    import warnings

    from tuner.importance import MIN_COMPLETE_TRIALS

    study = make_study(n=40, conditional=True)
    ours = importance(study, "val_ndcg_10", method="ped_anova", min_trials=MIN_COMPLETE_TRIALS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dashboard = optuna.importance.get_param_importances(study)
    assert dict(ours) == pytest.approx(dashboard) and list(ours) == list(dashboard)
    few = make_study(n=MIN_COMPLETE_TRIALS, prune_every=4)  # 6 of 8 COMPLETE
    imp = importance(few, "val_ndcg_10", method="ped_anova", min_trials=MIN_COMPLETE_TRIALS)
    assert imp == {} and f"needs at least {MIN_COMPLETE_TRIALS}" in imp.reason and imp.n_trials == 6
