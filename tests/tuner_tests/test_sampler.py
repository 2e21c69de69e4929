"""PausedAwareTPESampler on hand-made studies: trials waiting at a rung (RUNNING with an epoch
reported) are what TPE models, and the study itself is never changed."""

import pickle

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tuner.sampler import PausedAwareTPESampler, _PausedAsPruned

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
    sampler = pickle.loads(pickle.dumps(PausedAwareTPESampler(seed=3, n_startup_trials=2)))
    assert isinstance(sampler, PausedAwareTPESampler) and sampler._n_startup_trials == 2
