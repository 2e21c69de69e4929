"""Pathology checks on synthetic curves: each check has a curve that must fire and one that must not."""

import math

import pytest

from analysis.diagnose import DiagnoseConfig, Diagnosis, diagnose, first_diagnosis
from tuner.stopper import PathologyStopper

M = "val_ndcg_10"


def hist(loss, vals, **extra):
    """Per-epoch result dicts like the trainable reports (epoch from 1)."""
    rows = []
    for i, (l, v) in enumerate(zip(loss, vals)):
        row = {"epoch": i + 1, "train_loss": l, M: v}
        row.update({k: xs[i] for k, xs in extra.items()})
        rows.append(row)
    return rows


def linear(a, b, n):
    return [a + (b - a) * i / (n - 1) for i in range(n)]


# A healthy BPR run (seed 002's expected curve): loss falls, NDCG rises then plateaus while the
# loss keeps falling (convergence). Nothing may fire on it, at any epoch.
HEALTHY = hist([1.0, 0.8, 0.65, 0.55, 0.48, 0.43, 0.39, 0.36, 0.34, 0.32, 0.31, 0.30, 0.29, 0.285, 0.28],
               [0.010, 0.015, 0.018, 0.022, 0.025, 0.027, 0.0285, 0.029, 0.0292, 0.0291, 0.0292, 0.0290,
                0.0291, 0.0292, 0.0291], grad_ratio=[3.0] * 15, logit_bound=[10.0] * 15)


def test_healthy_curve_never_fires():
    assert first_diagnosis(HEALTHY, M, "max") is None


def test_healthy_min_mode_metric_never_fires():
    h = hist(linear(0.7, 0.3, 10), linear(0.9, 0.5, 10))  # a validation loss, lower is better
    assert first_diagnosis(h, M, "min") is None


# -- stuck ----------------------------------------------------------------------------------
def test_stuck_identical_loss_fires_after_n_epochs():
    n = DiagnoseConfig().stuck_epochs  # the default threshold, whatever it is set to
    d = first_diagnosis(hist([0.3133] * (n + 3), [0.004] * (n + 3)), M)
    assert d is not None and d.name == "stuck" and d.epoch == n
    assert f"unchanged for {n} epochs" in d.reason and "\n" not in d.reason


def test_plateau_shorter_than_n_does_not_fire():
    h = hist([0.6, 0.5, 0.45, 0.45, 0.40, 0.36, 0.33], linear(0.01, 0.03, 7))
    assert first_diagnosis(h, M) is None


def test_stuck_at_logit_floor_fires_even_with_noise():
    # seed 000: BCE on cosine logits bounded by s = 1 cannot go below log(1 + e^-1) = 0.3133
    assert math.log1p(math.exp(-1)) == pytest.approx(0.3133, abs=1e-4)
    loss = [0.3140, 0.3135, 0.3139, 0.3136]  # wiggles more than stuck_tol: only the floor explains it
    d = diagnose(hist(loss, [0.004, 0.0041, 0.004, 0.0042], logit_bound=[1.0] * 4), M)
    assert d is not None and d.name == "stuck" and "0.3133" in d.reason


def test_same_loss_far_above_the_floor_does_not_fire():
    loss = [0.3140, 0.3135, 0.3139, 0.3136]
    assert first_diagnosis(hist(loss, [0.004, 0.0041, 0.004, 0.0042], logit_bound=[10.0] * 4), M) is None
    assert first_diagnosis(hist(loss, [0.004, 0.0041, 0.004, 0.0042]), M) is None  # no bound reported


# -- collapsed ------------------------------------------------------------------------------
def test_collapsed_near_zero_loss_with_flat_metric_fires():
    # seed 001: loss 0.0001 after a few epochs, the ranking does not improve
    d = first_diagnosis(hist([0.05, 0.0008, 0.0002, 0.0001], [0.020, 0.021, 0.0209, 0.0205],
                             logit_scale=[10.0] * 4), M)
    assert d is not None and d.name == "collapsed" and d.epoch == 4 and "logit_scale 10" in d.reason


def test_low_loss_while_metric_still_rises_does_not_fire():
    h = hist([0.01, 0.0008, 0.0005, 0.0003, 0.0002], [0.02, 0.03, 0.04, 0.05, 0.06])
    assert first_diagnosis(h, M) is None


def test_zero_loss_is_collapsed_not_stuck():
    d = diagnose(hist([0.3, 0.0, 0.0, 0.0], [0.02, 0.02, 0.02, 0.019]), M)
    assert d is not None and d.name == "collapsed"


# -- diverged -------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, vals", [
    ([0.7, 0.5, 0.4, 3.0], [0.01, 0.02, 0.03, 0.01]),            # 7.5x the best loss
    ([0.7, 0.5, float("nan")], [0.01, 0.02, 0.03]),
    ([0.7, 0.5, 0.45], [0.01, 0.02, float("inf")]),
])
def test_diverged_fires(loss, vals):
    d = diagnose(hist(loss, vals), M)
    assert d is not None and d.name == "diverged" and d.epoch == len(loss)


def test_loss_bump_is_not_divergence():
    assert first_diagnosis(hist([0.7, 0.5, 0.4, 0.9, 0.38, 0.35], linear(0.01, 0.03, 6)), M) is None


# -- dominated ------------------------------------------------------------------------------
def test_dominated_fires_after_n_epochs_below_one_tenth():
    n = DiagnoseConfig().dominated_epochs  # the default: that many epochs in a row below 1/10
    ratios = [0.5] + [0.05] * (n + 1)  # below from epoch 2 on
    h = hist(linear(1.0, 0.5, n + 2), linear(0.01, 0.03, n + 2), grad_ratio_causal=ratios)
    d = first_diagnosis(h, M)
    assert d is not None and d.name == "dominated" and d.epoch == 1 + n
    assert "grad_ratio_causal" in d.reason and "causal" in d.reason


def test_smallest_of_several_ratios_counts():
    h = hist(linear(1.0, 0.5, 3), linear(0.01, 0.03, 3), grad_ratio_recon=[5, 5, 5], grad_ratio_div=[1, 0.02, 0.02])
    assert diagnose(h, M).name == "dominated"


@pytest.mark.parametrize("ratios", [[0.5, 0.05, 0.5, 0.05], [0.2, 0.2, 0.2, 0.2]])
def test_single_low_epoch_or_mild_ratio_does_not_fire(ratios):
    assert first_diagnosis(hist(linear(1.0, 0.5, 4), linear(0.01, 0.03, 4), grad_ratio=ratios), M) is None


# -- mismatch -------------------------------------------------------------------------------
SEED_002_NDCG = [0.0066, 0.0070, 0.0068, 0.0072, 0.0069, 0.0071, 0.0070]


def test_mismatch_seed_002_fires_on_epoch_7():
    # cross-entropy 8.99 -> 8.57 over 7 epochs while NDCG@10 wobbles 0.0066 -> 0.0072
    d = first_diagnosis(hist(linear(8.99, 8.57, 7), SEED_002_NDCG), M)
    assert d is not None and d.name == "mismatch" and d.epoch == 7 and "8.99" in d.reason


def test_mismatch_needs_n_epochs_and_a_flat_metric():
    assert first_diagnosis(hist(linear(8.99, 8.57, 6), SEED_002_NDCG[:6]), M) is None  # pattern too short
    assert first_diagnosis(hist(linear(8.99, 8.57, 7), linear(0.0066, 0.02, 7)), M) is None  # metric rises
    slow = dict(mismatch_epochs=10)  # gBCE-style slow starter: more patience
    assert first_diagnosis(hist(linear(8.99, 8.57, 7), SEED_002_NDCG), M, cfg=DiagnoseConfig(**slow)) is None


def test_mismatch_in_min_mode():
    d = diagnose(hist(linear(1.0, 0.6, 7), [0.90, 0.89, 0.91, 0.90, 0.88, 0.90, 0.89]), "val_loss_x", "min")
    assert d is None  # metric key absent: metric checks are skipped, nothing else fires
    h = [dict(r, val_loss=v) for r, v in zip(hist(linear(1.0, 0.6, 7), [0] * 7),
                                               [0.90, 0.89, 0.91, 0.90, 0.88, 0.90, 0.89])]
    assert diagnose(h, "val_loss", "min").name == "mismatch"
    h = [dict(r, val_loss=v) for r, v in zip(hist(linear(1.0, 0.6, 7), [0] * 7), linear(0.9, 0.5, 7))]
    assert diagnose(h, "val_loss", "min") is None


# The default sweep's leader (issue 17): val NDCG@10 0.095 -> 0.101 in 7 epochs while BPR's loss
# fell every epoch. +6% on epoch 1 is under mismatch_gain, but it led the sweep: converged, not broken.
LEADER_NDCG = [0.0950, 0.0990, 0.1005, 0.1010, 0.1008, 0.1010, 0.1009]


def test_mismatch_against_popularity_spares_a_plateau_far_above_it():
    h = hist(linear(0.69, 0.40, 7), LEADER_NDCG)
    assert first_diagnosis(h, M).name == "mismatch"  # the old rule: gain over epoch 1 only
    assert first_diagnosis(h, M, reference=0.0331) is None  # 3x the popularity baseline: not seed 002
    d = first_diagnosis(hist(linear(8.99, 8.57, 7), SEED_002_NDCG), M, reference=0.0068)
    assert d is not None and d.name == "mismatch" and "popularity baseline (0.0068" in d.reason


def feed(stop, trial, losses, vals):
    return [stop(trial, r) for r in hist(losses, vals)]


def test_stopper_never_stops_the_leader_for_mismatch_or_stuck():
    """Without a reference the old rule fires on the leader's curve; its peers' curves overrule it."""
    stop = PathologyStopper(M, "max")
    feed(stop, "slow", linear(0.69, 0.60, 7), linear(0.03, 0.06, 7))
    assert not any(feed(stop, "leader", linear(0.69, 0.40, 7), LEADER_NDCG))
    assert "leader" not in stop.reasons
    flat = [0.3133] * 7  # stuck at a floor, yet the best at every epoch: left to ASHA
    assert not any(feed(stop, "flat-leader", flat, [0.2] * 7))


def test_stopper_still_stops_a_lagging_trial_with_the_same_shape():
    stop = PathologyStopper(M, "max")
    feed(stop, "leader", linear(0.69, 0.40, 7), linear(0.05, 0.20, 7))
    assert feed(stop, "lagging", linear(0.69, 0.40, 7), LEADER_NDCG)[-1] is True
    assert stop.reasons["lagging"].name == "mismatch"


def test_stopper_uses_the_popularity_reference():
    stop = PathologyStopper(M, "max", reference=0.0068)
    assert feed(stop, "ce", linear(8.99, 8.57, 7), SEED_002_NDCG)[-1] is True
    assert "popularity baseline" in stop.reasons["ce"].reason


# -- config ---------------------------------------------------------------------------------
def test_disabled_and_zero_turn_checks_off():
    stuck = hist([0.3133] * 6, [0.004] * 6)
    assert diagnose(stuck, M, cfg=DiagnoseConfig(enabled=False)) is None
    assert diagnose(stuck, M, cfg=DiagnoseConfig(stuck_epochs=0)) is None
    assert diagnose([], M) is None


def test_diagnosis_string_is_the_stop_reason():
    d = Diagnosis("stuck", "train_loss unchanged", 3)
    assert str(d) == "stuck: train_loss unchanged"


# -- the Ray Tune stopper -------------------------------------------------------------------
def test_stopper_fires_records_reason_and_keeps_trials_apart():
    stop = PathologyStopper(M, "max")
    fired = []
    for i in range(6):
        healthy = {**HEALTHY[i], "config": {"lr": 0.01}, "trial_id": "a", "done": False}
        stuck = {"epoch": i + 1, "train_loss": 0.3133, M: 0.004, "config": {"lr": 1e-9}, "hostname": "h"}
        assert stop("a", healthy) is False
        fired.append(stop("b", stuck))
        if fired[-1]:
            assert stuck["stop_reason"].startswith("stuck: ")
    assert fired == [False, False, True, True, True, True]  # stays stopped once fired
    assert set(stop.reasons) == {"b"} and stop.reasons["b"].name == "stuck" and stop.reasons["b"].epoch == 3
    assert stop.stop_all() is False
    assert all(isinstance(v, float | int) for r in stop.watch.histories["a"] for v in r.values())


def test_stopper_restored_trial_does_not_duplicate_epochs():
    stop = PathologyStopper(M, "max")
    for e in (1, 2, 3, 2, 3, 4):  # restored from the epoch-1 checkpoint: epochs 2, 3 come again
        stop("t", {"epoch": e, "train_loss": 1.0 / e, M: 0.01 * e})
    assert [r["epoch"] for r in stop.watch.histories["t"]] == [1, 2, 3, 4]


def test_stopper_disabled_never_stops():
    stop = PathologyStopper(M, "max", DiagnoseConfig(enabled=False))
    assert not any(stop("b", {"epoch": e, "train_loss": 0.3133, M: 0.004}) for e in range(1, 6))


@pytest.mark.ray
def test_stopper_in_a_real_tuner(ray_session, tmp_path):
    """Ray 2.60 calls the stopper before the callbacks: the reason reaches the trial's last result."""
    from ray import tune

    def trainable(config):  # local, so Ray ships it by value (tests/ is not importable on workers)
        for epoch in range(1, 11):
            loss = 0.3133 if config["stuck"] else 1.0 / epoch
            tune.report({"epoch": epoch, "train_loss": loss, M: 0.004 if config["stuck"] else 0.01 * epoch})

    stop = PathologyStopper(M, "max")
    grid = tune.Tuner(trainable, param_space={"stuck": tune.grid_search([True, False])},
                      run_config=tune.RunConfig(stop=stop, storage_path=str(tmp_path), verbose=0)).fit()
    by = {r.config["stuck"]: r.metrics for r in grid}
    assert by[True]["epoch"] == 3 and by[True]["stop_reason"].startswith("stuck: ")
    assert by[False]["epoch"] == 10 and "stop_reason" not in by[False]
    assert [d.name for d in stop.reasons.values()] == ["stuck"]


def test_checks_do_not_import_ray_and_stopper_pickles():
    import pickle
    import subprocess
    import sys

    code = "import sys, analysis.diagnose as d; d.diagnose([], 'm'); print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "False"
    from ray.tune.stopper import Stopper

    stop = PathologyStopper(M, "min", DiagnoseConfig(stuck_epochs=4))
    stop("t", {"epoch": 1, "train_loss": 1.0, M: 0.1})
    back = pickle.loads(pickle.dumps(stop))  # Ray saves the run config (and its stopper) with the experiment
    assert isinstance(back, Stopper) and type(back) is PathologyStopper
    assert back.watch.cfg.stuck_epochs == 4 and back.watch.histories == stop.watch.histories


def test_first_diagnosis_reads_a_dataframe_with_gaps_and_numpy_types():
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(hist(linear(8.99, 8.57, 7), SEED_002_NDCG))
    df["grad_ratio"] = [np.nan, 2.0, np.nan, 2.0, 2.0, np.nan, 2.0]  # reported on some epochs only
    df[M] = df[M].astype(np.float32)
    d = first_diagnosis(df, M)
    assert d is not None and d.name == "mismatch" and d.epoch == 7
    assert diagnose([{"epoch": np.int64(1), "train_loss": np.float32(np.nan), M: 0.1}], M).name == "diverged"


def test_mismatch_spares_a_high_starting_bounded_metric():
    """Macro-F1 0.912 -> 0.942 while the loss falls: healthy, although +3% < mismatch_gain."""
    from analysis.diagnose import DiagnoseConfig, first_diagnosis

    f1 = [0.9121, 0.9200, 0.9260, 0.9310, 0.9350, 0.9390, 0.9415]
    loss = [0.96, 0.60, 0.40, 0.25, 0.17, 0.13, 0.1088]
    hist = [{"epoch": e + 1, "train_loss": l, "val_macro_f1": v} for e, (l, v) in enumerate(zip(loss, f1))]
    assert first_diagnosis(hist, "val_macro_f1", "max", DiagnoseConfig()) is None
