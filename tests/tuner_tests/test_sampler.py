"""TunerTPESampler on hand-made studies: with paused_as_pruned, trials waiting at a rung (RUNNING with
an epoch reported) are what TPE models, and the study itself is never changed; with largest_rung,
trials rank by their value at the largest epoch d + 1 of them reached, not COMPLETE first; with
random_fraction, that share of the trials after start-up are uniform draws, and the start-up is as
without it; bohb_gamma sizes TPE's good group as BOHB does."""

import copy
import pickle

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from functools import partial

from optuna.samplers._tpe.sampler import _split_trials, default_gamma

from tuner.sampler import TunerTPESampler, _LargestRung, _PausedAsPruned, bohb_gamma, largest_rung

PausedAwareTPESampler = partial(TunerTPESampler, paused_as_pruned=True)

optuna.logging.set_verbosity(optuna.logging.WARNING)
X = {"x": FloatDistribution(0.0, 1.0)}


def rung_study(sampler, n=4):
    """n trials ruled out at epoch 1 with x in [0.05, 0.15) (value 0.01) and n waiting at the epoch-1
    rung with x in [0.85, 0.95) (value 0.05, RUNNING to Optuna as under asha_promote), plus one
    that has not reported yet. Maximise."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(n):
        t = study.ask()
        study._storage.set_trial_param(t._trial_id, "x", 0.05 + 0.1 * i / n, X["x"])
        t.report(0.01, 1)
        study.tell(t, state=TrialState.PRUNED)
    for i in range(n):
        t = study.ask()
        study._storage.set_trial_param(t._trial_id, "x", 0.85 + 0.1 * i / n, X["x"])
        study._storage.set_trial_intermediate_value(t._trial_id, 1, 0.05)
    study.ask()  # started, no epoch yet
    return study


def draws(study, n=20):
    return [study.ask(X).params["x"] for _ in range(n)]


def test_the_view_shows_waiting_trials_as_pruned_and_leaves_the_study_alone():
    study = rung_study(optuna.samplers.RandomSampler(seed=0))
    view = _PausedAsPruned(study, current=-1)
    seen = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert [t.state for t in seen] == [TrialState.PRUNED] * 8  # the one without an epoch is left out
    assert [t.number for t in seen] == list(range(8))
    assert view._get_trials(states=(TrialState.RUNNING,)) == [study.trials[8]]  # only the unreported one
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 4 + [TrialState.RUNNING] * 5
    assert len(view.get_trials(states=(TrialState.COMPLETE,))) == 0
    assert view.direction == study.direction  # everything else is the study's


def test_the_trial_being_sampled_is_never_shown_as_pruned():
    study = rung_study(optuna.samplers.RandomSampler(seed=0))
    seen = _PausedAsPruned(study, current=4)._get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    assert 4 not in {t.number for t in seen} and len(seen) == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_follows_the_trials_waiting_at_the_rung(seed):
    # stock TPE sees only the ruled-out trials, so its good group is near x = 0.1; ours ranks the
    # waiting ones (same epoch, higher value) first. TPE's prior keeps both spread over [0, 1]
    # with 16 trials, so the test compares the two means (measured gaps 0.16-0.22, seeds 0-2)
    ours = draws(rung_study(PausedAwareTPESampler(seed=seed, n_startup_trials=0), n=8), n=40)
    stock = draws(rung_study(optuna.samplers.TPESampler(seed=seed, n_startup_trials=0), n=8), n=40)
    assert sum(ours) / 40 > 0.55 > 0.5 > sum(stock) / 40
    assert sum(ours) / 40 - sum(stock) / 40 > 0.1


@pytest.mark.parametrize("tpe, random_draws", [(PausedAwareTPESampler, 0), (optuna.samplers.TPESampler, 5)])
def test_start_up_counts_waiting_trials(tpe, random_draws):
    # 4 ruled out + 4 waiting: n_startup_trials=8 is reached only where the waiting ones count;
    # before that TPE hands every draw to its random sampler
    sampler = tpe(seed=1, n_startup_trials=8)
    calls = []
    real = sampler._random_sampler.sample_independent
    sampler._random_sampler.sample_independent = lambda *a: calls.append(a) or real(*a)
    draws(rung_study(sampler), n=5)
    assert len(calls) == random_draws


def test_it_pickles_for_ray_searcher_checkpoints():
    sampler = pickle.loads(pickle.dumps(PausedAwareTPESampler(seed=3, n_startup_trials=2, largest_rung=True,
                                                              random_fraction=0.5)))
    assert isinstance(sampler, TunerTPESampler) and sampler._n_startup_trials == 2
    assert (sampler._paused_as_pruned, sampler._largest_rung, sampler._random_fraction) == (True, True, 0.5)


def finisher_study(sampler, n=4, paused=False):
    """One trial that ran all 8 epochs with x = 0.1 and a poor score (0.02 at each epoch), and n
    trials with x in [0.85, 0.95) that led at epochs 1-2 (0.03, then 0.05) and were stopped there
    (PRUNED; RUNNING with `paused`, as when waiting at an asha_promote rung), and n ruled out at
    epoch 1 with x in [0.45, 0.55) (0.01). Maximise; one knob, so an epoch needs 2 results to count."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    t = study.ask()
    study._storage.set_trial_param(t._trial_id, "x", 0.1, X["x"])
    for epoch in range(1, 9):
        t.report(0.02, epoch)
    study.tell(t, 0.02)
    for lo, curve in ((0.85, (0.03, 0.05)), (0.45, (0.01,))):
        for i in range(n):
            t = study.ask()
            study._storage.set_trial_param(t._trial_id, "x", lo + 0.1 * i / n, X["x"])
            for epoch, value in enumerate(curve, 1):
                study._storage.set_trial_intermediate_value(t._trial_id, epoch, value)
            if not (paused and lo == 0.85):
                study.tell(t, state=TrialState.PRUNED)
    return study


def test_the_largest_rung_is_the_largest_epoch_with_d_plus_1_results():
    trials = finisher_study(optuna.samplers.RandomSampler(seed=0)).trials  # 1 knob: 2 results needed
    assert largest_rung(trials) == 2  # epochs 3-8 have the finisher's result only
    assert largest_rung(trials[:2]) == 2 and largest_rung(trials[:1]) is None
    two_knobs = list(trials)
    two_knobs[1] = copy.copy(trials[1])
    two_knobs[1].params = {"x": 0.9, "y": 1}  # d = 2: 3 results needed, epoch 2 has 5
    assert largest_rung(two_knobs) == 2 and largest_rung(two_knobs[:2]) is None
    assert largest_rung([]) is None


def test_the_view_ranks_trials_at_the_largest_rung_and_leaves_the_study_alone():
    study = finisher_study(optuna.samplers.RandomSampler(seed=0))
    view = _LargestRung(study)
    seen = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
    assert [t.state for t in seen] == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED] * 4
    assert [t.value for t in seen[:5]] == [0.02] + [0.05] * 4  # best up to epoch 2
    below, _ = _split_trials(view, seen, 2)
    assert {t.number for t in below} == {1, 2}  # the leaders at epoch 2, not the finisher
    stock_below, _ = _split_trials(study, study.trials, 2)
    assert 0 in {t.number for t in stock_below}  # Optuna's order: COMPLETE first, whatever its score
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 8
    assert len(view.get_trials(states=(TrialState.PRUNED,))) == 4
    few = _LargestRung(finisher_study(optuna.samplers.RandomSampler(seed=0), n=0))
    assert [t.state for t in few.get_trials()] == [TrialState.COMPLETE]  # no epoch with 2 results: as it is


def test_a_finished_trial_short_of_the_largest_rung_shows_as_pruned():
    study = finisher_study(optuna.samplers.RandomSampler(seed=0))
    t = study.ask()  # a short run that finished: 1 epoch, 0.04
    study._storage.set_trial_param(t._trial_id, "x", 0.3, X["x"])
    t.report(0.04, 1)
    study.tell(t, 0.04)
    shown = {t.number: t for t in _LargestRung(study).get_trials()}
    assert shown[9].state == TrialState.PRUNED and shown[9].value is None
    assert study.trials[9].state == TrialState.COMPLETE


@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_follows_the_leaders_at_the_largest_rung(seed, paused):
    # stock TPE's good group holds the finisher (x = 0.1); with largest_rung it holds the leaders at
    # epoch 2 (x near 0.9). With paused, the leaders wait at the rung and paused_as_pruned shows them
    def sampler(**ours):
        return TunerTPESampler(seed=seed, n_startup_trials=0, paused_as_pruned=paused, **ours)
    ours = draws(finisher_study(sampler(largest_rung=True), n=8, paused=paused), n=40)
    stock = draws(finisher_study(sampler(random_fraction=0.0), n=8, paused=paused), n=40)
    assert sum(ours) / 40 > 0.6 and sum(ours) / 40 - sum(stock) / 40 > 0.1


def finished_study(sampler, n):
    """n finished trials: value x, so TPE's good group sits at x near 1 (maximise)."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n):
        t = study.ask(X)
        study.tell(t, t.params["x"])
    return study


def uniform_trials(sampler):
    """The trial numbers whose knobs came from the interleaved uniform sampler."""
    return sorted(n for n, uniform in sampler._drawn_uniform.items() if uniform)


@pytest.mark.parametrize("fraction, expected", [(1 / 3, [11, 14, 17, 20, 23]), (0.3333333333, [11, 14, 17, 20, 23]),
                                                (0.5, [11, 13, 15, 17, 19, 21, 23]), (0.0, [])])
def test_a_share_of_the_trials_after_start_up_are_uniform_evenly_spaced(fraction, expected):
    sampler = TunerTPESampler(seed=0, n_startup_trials=10, random_fraction=fraction)
    finished_study(sampler, 24)
    assert uniform_trials(sampler) == expected  # trials 0-9 are start-up; 10 is the first TPE proposal


def test_the_uniform_draws_are_uniform_and_the_rest_is_tpe():
    # TPE's good group is near x = 1, so its proposals sit high; the uniform ones spread over [0, 1]
    sampler = TunerTPESampler(seed=0, n_startup_trials=10, random_fraction=0.5)
    study = finished_study(sampler, 110)
    later = study.trials[10:]
    uniform = [t.params["x"] for t in later if sampler._drawn_uniform.get(t.number)]
    tpe = [t.params["x"] for t in later if not sampler._drawn_uniform.get(t.number)]
    assert len(uniform) == len(tpe) == 50
    assert sum(tpe) / 50 > 0.85 and 0.35 < sum(uniform) / 50 < 0.65 and min(uniform) < 0.2


@pytest.mark.parametrize("fraction", [1 / 3, 0.5])
def test_the_start_up_draws_are_as_without_the_option(fraction):
    plain = finished_study(optuna.samplers.TPESampler(seed=4, n_startup_trials=10), 10)
    mixed = finished_study(TunerTPESampler(seed=4, n_startup_trials=10, random_fraction=fraction), 10)
    assert [t.params for t in mixed.trials] == [t.params for t in plain.trials]


def test_a_fraction_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="random_fraction"):
        TunerTPESampler(random_fraction=1.5)


@pytest.mark.parametrize("n, knobs, expected", [(1, 6, 1), (5, 6, 5), (7, 6, 7), (20, 6, 7), (46, 6, 7), (47, 6, 7),
                                                (48, 6, 7), (60, 6, 9), (100, 2, 15), (200, 6, 30)])
def test_bohb_gamma_is_the_top_15_percent_and_at_least_d_plus_1(n, knobs, expected):
    assert bohb_gamma(n, knobs=knobs) == expected


def test_bohb_gamma_widens_tpes_good_group():
    # 20 finished trials valued x: Optuna's default good group is the top 2, BOHB's (d = 6) the top 7
    with pytest.warns(FutureWarning):  # TPESampler's gamma: deprecated in Optuna 4.9 (pyproject caps < 6)
        wide = optuna.samplers.TPESampler(seed=0, gamma=partial(bohb_gamma, knobs=6))
    study = finished_study(optuna.samplers.RandomSampler(seed=1), 20)
    trials = study.get_trials(deepcopy=False)
    top = sorted(t.params["x"] for t in trials)[::-1]
    for gamma, size in ((default_gamma, 2), (wide._gamma, 7)):
        good, bad = _split_trials(study, trials, gamma(len(trials)))
        assert sorted((t.params["x"] for t in good), reverse=True) == top[:size] and len(bad) == 20 - size
