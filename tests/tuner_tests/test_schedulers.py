"""ASHA with promotions: the rung bookkeeping, the Ray scheduler against a stand-in controller, the limiter."""

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from tuner.schedulers import PauseAwareLimiter, PromotionASHA, Rungs
from tuner.spec import SchedulerSpec


def test_rungs_promote_only_inside_floor_n_over_rf():
    r = Rungs((1, 3), reduction_factor=3, samples=9)
    assert r.record(0, "a", 0.1) == [] and r.promotable(0) == []  # 1 trial: quota 0
    assert r.record(0, "b", 0.3) == [] and r.promotable(0) == []  # 2 trials: still 0 (Ray's ASHA continues both)
    assert r.record(0, "c", 0.2) == [] and r.promotable(0) == ["b"]  # 3 trials: the best one
    r.promote(0, "b")
    assert r.promotable(0) == []
    # 9 samples -> at most floor(9/3) = 3 promotions: the 4th-ranked can never make it, whatever comes
    assert r.record(0, "d", 0.05) == ["d"] and r.out == {"d": 0}
    assert r.record(0, "e", 0.9) == ["a"]  # e pushes a (now 4th) out
    assert r.promotable(0) == ["e"]  # 5 trials: quota 1, but b was promoted when it was best: e may go too
    assert sorted(r.waiting()) == [(0, "c"), (0, "e")]


def test_rungs_cap_shrinks_with_trials_stopped_below_and_min_mode_and_nan():
    r = Rungs((1, 3), reduction_factor=2, samples=4, mode="min")
    assert r.cap(1) == 4
    r.record(0, "a", 1.0)
    r.record(0, "b", float("nan"))  # a NaN ranks last whatever the mode
    assert r.ranked(0) == ["a", "b"]
    r.record(0, "c", 0.5)  # loss: lower is better
    assert r.ranked(0) == ["c", "a", "b"]
    assert r.out == {"b": 0}  # 4 samples, rf 2: 2 places; b is 3rd
    assert r.cap(1) == 3 and r.cap(0) == 4
    r.record(1, "c", 0.4)
    assert r.record(1, "a", 0.6) == ["a"]  # rung 1 holds at most 3: 1 place, c holds it


@pytest.mark.parametrize("grace, rf, max_t, rungs", [
    (2, 3, 20, (2, 6)),  # 18 would buy only 2 more epochs: the promoted from 6 run to 20
    (1, 2, 4, (1, 2)),
    (1, 2, 8, (1, 2, 4)),
    (5, 3, 4, ()),
])
def test_promotion_rungs(grace, rf, max_t, rungs):
    assert SchedulerSpec("asha_promote", grace, rf).rungs(max_t) == rungs


class FakeTrial:
    def __init__(self, trial_id, status=Trial.RUNNING):
        self.trial_id, self.status = trial_id, status


class FakeController:
    """What PromotionASHA asks of Ray's TuneController: the trials, and stopping one."""

    def __init__(self, *ids):
        self.trials = [FakeTrial(i, Trial.PENDING) for i in ids]
        self.stopped = []

    def get_trials(self):
        return self.trials

    def get_trial(self, tid):
        return next((t for t in self.trials if t.trial_id == tid), None)

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        trial.status = Trial.TERMINATED


class AsRay:
    """The controller as Ray hands it to a scheduler: Ray logs "You are trying to access ... restricted"
    for any call outside this list (tune_controller.py, TuneController._wrapped)."""

    ALLOWED = {"search_alg", "get_trials", "get_live_trials", "_set_trial_status", "pause_trial", "stop_trial",
               "_schedule_trial_save"}

    def __init__(self, tc):
        self._tc = tc

    def __getattr__(self, name):
        assert name in self.ALLOWED, f"the scheduler called {name}, which Ray restricts"
        return getattr(self._tc, name)


def report(sched, tc, tid, epoch, value):
    t = tc.get_trial(tid)
    t.status = Trial.RUNNING
    decision = sched.on_trial_result(AsRay(tc), t, {"epoch": epoch, "val": value})
    t.status = {TrialScheduler.PAUSE: Trial.PAUSED, TrialScheduler.STOP: Trial.TERMINATED}.get(decision, t.status)
    return decision


def make(samples=6, limiter=None):
    tc = FakeController(*[f"t{i}" for i in range(samples)])
    s = PromotionASHA(metric="val", mode="max", milestones=(2, 6), reduction_factor=3, samples=samples,
                      limiter=limiter)
    for t in tc.trials:
        s.on_trial_add(tc, t)
    return s, tc


def test_first_arrivals_pause_and_the_best_of_three_is_resumed_before_new_trials():
    s, tc = make()
    assert report(s, tc, "t0", 1, 0.5) == TrialScheduler.CONTINUE  # not a rung
    assert report(s, tc, "t0", 2, 0.5) == TrialScheduler.PAUSE  # first arrival: no comparison yet
    assert report(s, tc, "t1", 2, 0.1) == TrialScheduler.PAUSE
    assert s.choose_trial_to_run(AsRay(tc)).trial_id == "t2"  # nothing promotable: a new trial
    assert report(s, tc, "t2", 2, 0.3) == TrialScheduler.PAUSE  # 3 trials, quota 1: t0 is the best
    chosen = s.choose_trial_to_run(AsRay(tc))
    assert chosen.trial_id == "t0" and s.rungs.promoted[0] == {"t0"}  # a promotion before pending trials
    chosen.status = Trial.RUNNING  # the controller starts it
    assert s.choose_trial_to_run(AsRay(tc)).trial_id == "t3"
    assert report(s, tc, "t0", 3, 0.6) == TrialScheduler.CONTINUE  # the resumed trial goes on
    # 6 samples, rf 3: 2 places at rung 0; t1 is already 3rd and can never be promoted
    assert "t1" in tc.stopped


def test_an_arrival_inside_the_quota_continues_and_a_hopeless_one_stops():
    s, tc = make()
    report(s, tc, "t0", 2, 0.1)
    report(s, tc, "t1", 2, 0.2)
    assert report(s, tc, "t2", 2, 0.9) == TrialScheduler.CONTINUE  # best of 3: promoted without a pause
    assert report(s, tc, "t3", 2, 0.05) == TrialScheduler.STOP  # 4th of at most 6: never in the top 2
    assert tc.stopped == ["t0"]  # t0 (0.1, paused) is 3rd behind t2 and t1: out as well


def test_when_nothing_runs_and_nothing_is_left_the_waiting_are_stopped():
    s, tc = make(samples=6)
    report(s, tc, "t0", 2, 0.5)
    report(s, tc, "t1", 2, 0.4)
    assert report(s, tc, "t2", 2, 0.6) == TrialScheduler.CONTINUE
    assert tc.stopped == ["t1"]  # 3rd of at most 6, rf 3: out; t0 (2nd) may still be promoted
    for tid in ("t3", "t4", "t5"):
        tc.get_trial(tid).status = Trial.ERROR  # crashed before the rung
    assert s.choose_trial_to_run(AsRay(tc)) is None and tc.stopped == ["t1"]  # t2 still runs: wait
    tc.get_trial("t2").status = Trial.TERMINATED
    assert s.choose_trial_to_run(AsRay(tc)) is None
    assert tc.stopped == ["t1", "t0"] and s.rungs.out == {"t1": 0, "t0": 0}


class ListSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="val", mode="max")
        self.completed = []

    def suggest(self, trial_id):
        return {"x": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append(trial_id)


def test_limiter_frees_a_slot_on_pause_and_still_reports_a_trial_stopped_while_paused():
    inner = ListSearcher()
    lim = PauseAwareLimiter(inner, max_concurrent=1)
    assert lim.suggest("a") is not None
    assert lim.suggest("b") is None  # one slot, taken
    lim.pause("a")
    assert lim.suggest("b") is not None  # a paused trial holds no slot
    lim.on_trial_complete("a")  # stopped while paused
    assert inner.completed == ["a"]
    lim.resume("a")  # no-op: already completed
    assert lim.live_trials == {"b"}


def test_scheduler_frees_and_retakes_limiter_slots():
    lim = PauseAwareLimiter(ListSearcher(), max_concurrent=2)
    s, tc = make(limiter=lim)
    for tid in ("t0", "t1"):
        lim.suggest(tid)
    report(s, tc, "t0", 2, 0.5)
    # t2..t5 were added before any suggestion (Ray suggests first): held as restored trials, no slot
    assert lim.live_trials == {"t1"} and lim.paused == {"t0", "t2", "t3", "t4", "t5"}
    report(s, tc, "t1", 2, 0.1)
    lim.suggest("t2")
    report(s, tc, "t2", 2, 0.2)
    assert s.choose_trial_to_run(AsRay(tc)).trial_id == "t0"
    assert lim.live_trials == {"t0"} and "t2" in lim.paused  # t0 runs again; t2 waits without a slot


def test_promotion_asha_tells_tune_its_metric_and_no_buffering():
    """Through Ray's public properties: tune.run refuses buffered results (several epochs per
    report) only if `supports_buffered_results` says so, and a pause must land on the rung's result."""
    s = PromotionASHA(metric="val_ndcg_10", mode="max", milestones=(2, 6), reduction_factor=3, samples=4)
    assert s.metric == "val_ndcg_10" and s.supports_buffered_results is False


def test_patience_stopper_on_a_synthetic_history():
    """`tuner compare`'s patience: stop after N epochs without a strict improvement, per trial."""
    from tuner.stopper import PatienceStopper

    stop = PatienceStopper("val_ndcg_10", "max", patience=2)
    curve = [0.10, 0.20, 0.20, 0.15, 0.30]  # best at epoch 2; epochs 3 and 4 do not beat it (a tie is no gain)
    fired = [stop("t1", {"epoch": e, "val_ndcg_10": v}) for e, v in enumerate(curve, 1)]
    assert fired == [False, False, False, True, False] and stop.epochs_run["t1"] == 5
    assert stop.stopped == {"t1"} and stop.stop_all() is False
    # another trial keeps its own count; a missing or non-finite value is no improvement
    assert [stop("t2", {"epoch": e, "val_ndcg_10": v}) for e, v in [(1, 0.5), (2, float("nan")), (3, 0.6)]] == \
        [False, False, False]
    assert stop("t2", {"epoch": 4}) is False and stop("t2", {"epoch": 5}) is True
    # lower is better; a trial restarted from its epoch-1 checkpoint resends epoch 2 without double counting
    low = PatienceStopper("val_loss", "min", patience=1)
    assert [low("t", {"epoch": e, "val_loss": v}) for e, v in [(1, 1.0), (2, 0.8)]] == [False, False]
    assert low("t", {"epoch": 2, "val_loss": 0.8}) is False and low("t", {"epoch": 3, "val_loss": 0.9}) is True
    with pytest.raises(ValueError):
        PatienceStopper("m", "max", 0)


def test_sweep_end_counts_each_trials_epochs_once_and_wraps_the_trial_stopper():
    """search.epoch_budget: stop_all once the trials' epochs add up to the budget; a trial resumed from
    a checkpoint resends an epoch without counting it twice; the inner stopper still decides per trial."""
    from tuner.stopper import PatienceStopper, SweepEnd, trial_closed

    b = SweepEnd(PatienceStopper("m", "max", patience=1), budget=5)
    assert [b("a", {"epoch": e, "m": v}) for e, v in [(1, 0.1), (2, 0.05)]] == [False, True]  # patience fired
    assert b("b", {"epoch": 1, "m": 0.3}) is False and b("b", {"epoch": 1, "m": 0.3}) is False  # resent
    assert (b.used, b.spent, b.stop_all()) == (3, False, False)
    assert b("b", {"epoch": 2, "m": 0.4}) is False
    assert b("c", {"m": 0.2}) is True  # no epoch key: its results are counted; this one spends the budget
    # the others end only once Tune has ended "c" as a trial, its checkpoint saved (TrialRuns tells)
    assert (b.used, b.spent, b.ender, b.stop_all()) == (5, True, "c", False)
    trial_closed(b.key, "a")
    assert b.stop_all() is False
    trial_closed(b.key, "c")
    assert b.stop_all() is True and b.stopped == {"a"}  # the inner's attribute
    alone = SweepEnd(budget=2)
    assert alone("x", {"epoch": 1}) is False and not alone.stop_all() and (alone("y", {"epoch": 1}), alone.spent) == (True, True)
    trial_closed(alone.key, "y")
    assert alone.stop_all() is True
    with pytest.raises(AttributeError):
        alone.stopped
    with pytest.raises(ValueError):
        SweepEnd(budget=0)
    with pytest.raises(ValueError):
        SweepEnd(target=0.5)  # a target of which metric?
    # `tuner resume`: the epochs counted from MLflow reach the copy Tune unpickles from its state
    import pickle

    built = SweepEnd(budget=10)
    built("t1", {"epoch": 2})
    running = pickle.loads(pickle.dumps(built))  # saved before t1's epochs 3-4 and t2's 1-3
    built.restore({"t1": 4, "t2": 3})
    assert running.used == 2 and running.stop_all() is False and running.used == 7
    assert running("t1", {"epoch": 5}) is False  # t1 goes on from its checkpoint
    assert running.used == 8 and running("t3", {"epoch": 2}) is True and running.stop_all() is False
    trial_closed(built.key, "t3")  # the key is shared by every copy
    assert running.stop_all() is True


def test_sweep_end_at_a_target_value_in_either_direction():
    """search.stop_at: stop_all once one result reaches the target (>= for max, <= for min); NaN,
    a missing value or another metric never does; no budget: epochs never end it."""
    from tuner.stopper import SweepEnd, trial_closed

    up = SweepEnd(target=0.04, metric="val_ndcg_10", mode="max")
    for r in ({"epoch": 1, "val_ndcg_10": 0.039}, {"epoch": 2, "val_ndcg_10": float("nan")}, {"epoch": 3},
              {"epoch": 4, "val_loss": 0.05}):
        assert up("a", r) is False and up.stop_all() is False
    assert up("b", {"epoch": 1, "val_ndcg_10": 0.04}) is True
    trial_closed(up.key, "b")
    assert up.reached and up.stop_all() and not up.spent
    down = SweepEnd(target=0.5, metric="val_loss", mode="min")
    down("a", {"epoch": 1, "val_loss": 0.6})
    assert not down.stop_all()
    down("a", {"epoch": 2, "val_loss": 0.49})
    trial_closed(down.key, "a")
    assert down.stop_all()


def live_history(samples=6):
    """Drive a scheduler through a few rung arrivals, logging what TrialRuns would log to MLflow:
    {trial: {epoch: (timestamp, value)}} with one timestamp per report, in order."""
    s, tc = make(samples=samples)
    log, clock = {}, iter(range(1000))

    def rep(tid, epoch, value):
        log.setdefault(tid, {})[epoch] = (float(next(clock)), value)
        return report(s, tc, tid, epoch, value)

    rep("t0", 2, 0.5)
    rep("t1", 2, 0.1)
    rep("t2", 2, 0.3)  # quota 1: t0 is promotable
    chosen = s.choose_trial_to_run(AsRay(tc))
    chosen.status = Trial.RUNNING
    rep("t0", 3, 0.55)  # promoted: past the rung
    rep("t3", 2, 0.05)  # 4th of at most 6 at rf 3: out at once
    return s, tc, log


def test_replay_of_logged_epochs_rebuilds_the_same_rungs():
    s, _, log = live_history()
    r = Rungs((2, 6), reduction_factor=3, samples=6)
    r.replay(log)
    assert r.values == s.rungs.values and r.promoted == s.rungs.promoted and r.out == s.rungs.out
    assert r.out == {"t1": 0, "t3": 0} and r.promoted[0] == {"t0"} and r.waiting() == [(0, "t2")]
    # arrival order, not dict order, decides ties and who was out when
    r2 = Rungs((2, 6), reduction_factor=3, samples=6)
    r2.replay(dict(reversed(list(log.items()))))
    assert r2.out == r.out and r2.promoted == r.promoted


def test_a_resumed_scheduler_keeps_the_waiting_waiting_and_stops_the_out():
    """Ray requeues every unfinished trial as PENDING on restore. Before: each restarted from its rung
    checkpoint and ran on (the Beauty sweep's 21 paused trials all started again). Now the rebuilt rungs
    decide: ruled-out trials stop, waiting ones wait, the others run."""
    _, _, log = live_history()
    lim = PauseAwareLimiter(ListSearcher(), max_concurrent=2)
    s = PromotionASHA(metric="val", mode="max", milestones=(2, 6), reduction_factor=3, samples=6, limiter=lim)
    s.restore(log)
    tc = FakeController("t0", "t1", "t2", "t3", "t4", "t5")  # all PENDING, as Ray restores them
    for t in tc.trials:
        s.on_trial_add(tc, t)
    assert lim.paused == {f"t{i}" for i in range(6)} and not lim.live_trials  # restored: no slot yet
    chosen = s.choose_trial_to_run(AsRay(tc))
    assert sorted(tc.stopped) == ["t1", "t3"]  # out before the interrupt: never run again
    assert chosen.trial_id == "t0" and lim.live_trials == {"t0"}  # promoted earlier: runs on
    chosen.status = Trial.RUNNING
    chosen = s.choose_trial_to_run(AsRay(tc))
    assert chosen.trial_id == "t4"  # t2 waits at rung 2: not started as if new
    chosen.status = Trial.RUNNING
    # a restored trial replaying its rung epoch (Ray restored it from an earlier checkpoint) is not
    # recorded twice, and keeps its standing: t0 was promoted from rung 2
    assert report(s, tc, "t0", 2, 0.5) == TrialScheduler.CONTINUE and len(s.rungs.values[0]) == 4
    assert report(s, tc, "t4", 2, 0.9) == TrialScheduler.CONTINUE  # 5 at rung 2, quota 1, t0 counted: t4 best
    tc.get_trial("t5").status = Trial.ERROR
    for tid in ("t0", "t4"):
        tc.get_trial(tid).status = Trial.TERMINATED
    assert s.choose_trial_to_run(AsRay(tc)) is None
    assert "t2" in tc.stopped and tc.get_trial("t2").status == Trial.TERMINATED  # no hang on a PENDING waiter


# -- Hyperband brackets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("brackets", [1, 2, 3])
def test_bracket_plan_deals_ray_shares_in_every_prefix(brackets):
    import math

    from tuner.schedulers import bracket_plan

    plan = bracket_plan(64, brackets)
    assert plan == bracket_plan(64, brackets) and set(plan) == set(range(brackets))
    weights = [math.exp(-s) for s in range(brackets)]
    for n in range(1, 65):  # after any number of trials, each bracket is within one trial of its share
        for s in range(brackets):
            assert abs(plan[:n].count(s) - n * weights[s] / sum(weights)) < 1.0, (n, s, plan[:n])
    assert bracket_plan(8, 2) == [0, 1, 0, 0, 0, 1, 0, 0]  # 0.73 / 0.27 of the trials


def make_bracketed(samples=8):
    from tuner.schedulers import bracket_plan

    tc = FakeController(*[f"t{i}" for i in range(samples)])
    s = PromotionASHA(metric="val", mode="max", milestones=(2, 6), reduction_factor=2, samples=samples,
                      brackets=2)
    for t in tc.trials:
        s.on_trial_add(tc, t)
    return s, tc, bracket_plan(samples, 2)


def test_a_later_bracket_is_first_compared_at_its_own_rung():
    """Bracket 1 starts at the second rung: its trials run through epoch 2 unjudged and are compared at
    epoch 6 with their own bracket only; bracket 0's trials pause at epoch 2 as before."""
    s, tc, plan = make_bracketed()
    assert [s.bracket_of[f"t{i}"] for i in range(8)] == plan == [0, 1, 0, 0, 0, 1, 0, 0]
    assert [len(r.milestones) for r in s.brackets] == [2, 1] and s.brackets[1].milestones == (6,)
    assert [r.samples for r in s.brackets] == [6, 2]
    assert report(s, tc, "t0", 2, 0.5) == TrialScheduler.PAUSE  # bracket 0: first arrival waits
    assert report(s, tc, "t1", 2, 0.0001) == TrialScheduler.CONTINUE  # bracket 1: epoch 2 is no rung
    assert "t1" not in s.rungs.values[0]
    assert report(s, tc, "t1", 6, 0.2) == TrialScheduler.PAUSE  # first of its bracket at epoch 6
    assert report(s, tc, "t5", 6, 0.1) == TrialScheduler.STOP  # 2 samples at rf 2: one place, t1 has it
    assert s.brackets[1].out == {"t5": 0} and s.rungs.out == {}
    chosen = s.choose_trial_to_run(AsRay(tc))  # t1 is promotable at epoch 6: before any new trial
    assert chosen.trial_id == "t1" and s.brackets[1].promoted[0] == {"t1"}
    assert "bracket 0: 2: 1 (0 promoted)" in s.debug_string() and "bracket 1: 6: 2 (1 promoted)" in s.debug_string()


def test_promotions_go_from_the_highest_epoch_over_all_brackets():
    s, tc, _ = make_bracketed()
    for tid, v in (("t0", 0.5), ("t2", 0.4)):
        report(s, tc, tid, 2, v)  # bracket 0, rung at epoch 2: quota 1, t0
    report(s, tc, "t1", 6, 0.3)
    report(s, tc, "t5", 6, 0.1)  # bracket 1 at epoch 6: quota 1, t1 (t5 out)
    first = s.choose_trial_to_run(AsRay(tc))
    first.status = Trial.RUNNING
    second = s.choose_trial_to_run(AsRay(tc))
    assert (first.trial_id, second.trial_id) == ("t1", "t0")


def test_a_resumed_bracketed_scheduler_places_trials_by_number_order():
    """Resume: trials go back to their brackets by the order of their numbers (a shared study may start
    them anywhere), also the one that never logged an epoch (by the order Ray adds it back in)."""
    s, tc, _ = make_bracketed(samples=4)
    log, clock = {}, iter(range(100))

    def rep(tid, epoch, value):
        log.setdefault(tid, {})[epoch] = (float(next(clock)), value)
        return report(s, tc, tid, epoch, value)

    for e in (1, 2):
        rep("t0", e, 0.1 * e)
    for e in range(1, 7):
        rep("t1", e, 0.05 * e)  # bracket 1: reaches epoch 6 unjudged
    for e in (1, 2, 3):
        rep("t2", e, 0.3 * e)  # best of 2 at epoch 2 in bracket 0: promoted on arrival, logged past it
    r = PromotionASHA(metric="val", mode="max", milestones=(2, 6), reduction_factor=2, samples=4, brackets=2)
    r.restore(log, {"t0": 40, "t1": 41, "t2": 42})
    assert r.bracket_of == {"t0": 0, "t1": 1, "t2": 0}
    assert [b.values for b in r.brackets] == [b.values for b in s.brackets]
    assert [b.promoted for b in r.brackets] == [b.promoted for b in s.brackets]
    tc2 = FakeController("t0", "t1", "t2", "t3")
    for t in tc2.trials:
        r.on_trial_add(tc2, t)
    assert r.bracket_of["t3"] == s.bracket_of["t3"] == 0
    without = PromotionASHA(metric="val", mode="max", milestones=(2, 6), reduction_factor=2, samples=4, brackets=2)
    without.restore(log)  # no numbers (brackets: 1 has no use for them): the first bracket
    assert set(without.bracket_of.values()) == {0}
