"""Every function of tuner/raycompat.py against the installed Ray and Optuna.

The adapter reads private attributes; an upgrade that renames one must fail here, naming it, not
in the middle of a user's sweep. One tiny real Tuner (a 1-epoch function trainable, an OptunaSearch
on a SQLite study behind a ConcurrencyLimiter) gives every object the adapter reads.
"""

import os
import re

import optuna
import pytest

from tuner import raycompat

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fitted(ray_session, tmp_path_factory):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.stopper import MaximumIterationStopper

    from tuner.schedulers import Fifo

    def one_epoch(config):  # nested: pickled by value, the workers cannot import this test module
        tune.report({"score": float(config["x"]), "epoch": 1})

    root = tmp_path_factory.mktemp("raycompat")
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    searcher = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="score", mode="max",
                            study_name="compat", storage=storage)

    class Marker(tune.Callback):  # any callback: the adapter must hand back the one we passed
        pass

    marker = Marker()
    tuner = tune.Tuner(one_epoch, tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=1), num_samples=2, scheduler=Fifo()),
        run_config=tune.RunConfig(name="ray", storage_path=str(root), callbacks=[marker], verbose=0,
                                  stop=MaximumIterationStopper(10)))
    grid = tuner.fit()
    return tuner, grid, searcher, marker, storage


def test_tuner_attributes(fitted):
    tuner, _, searcher, marker, _ = fitted
    assert marker in raycompat.tuner_callbacks(tuner)
    alg = raycompat.tuner_search_alg(tuner)
    assert alg.searcher is searcher  # ConcurrencyLimiter.searcher: the public way down to ours


def test_scheduler_and_storage_rebase(fitted, tmp_path):
    from tuner.schedulers import Fifo

    tuner, grid, _, _, _ = fitted
    assert isinstance(raycompat.tuner_scheduler(tuner), Fifo)
    trial = raycompat.grid_trials(grid)[0]
    name = trial.storage.trial_dir_name
    raycompat.rebase_trial_storage(trial, str(tmp_path / "moved"), "renamed")
    assert trial.storage.trial_fs_path == str(tmp_path / "moved" / "renamed" / name)


def test_grid_trials(fitted):
    _, grid, _, _, _ = fitted
    trials = raycompat.grid_trials(grid)
    assert len(trials) == 2 and {t.status for t in trials} == {"TERMINATED"}
    assert {t.trial_id for t in trials} == {r.metrics["trial_id"] for r in grid}


def test_stopper_and_each_trials_best(fitted):
    """tuner_stopper: the RunConfig's stop (search.epoch_budget / stop_at's SweepEnd); trial_best: the best
    value a trial reported (its one score here), None for a metric it never reported."""
    from ray.tune.stopper import MaximumIterationStopper

    tuner, grid, _, _, _ = fitted
    assert isinstance(raycompat.tuner_stopper(tuner), MaximumIterationStopper)
    for trial in raycompat.grid_trials(grid):
        assert raycompat.trial_best(trial, "score", "max") == pytest.approx(trial.config["x"])
        assert raycompat.trial_best(trial, "score", "min") == pytest.approx(trial.config["x"])
        assert raycompat.trial_best(trial, "nope", "max") is None


def test_optuna_search_attributes(fitted):
    _, grid, searcher, _, storage = fitted
    study = raycompat.optuna_study(searcher)
    assert isinstance(study, optuna.Study) and study.study_name == "compat"
    assert raycompat.study_name(searcher) == "compat"
    assert raycompat.storage_url(searcher) == storage.url
    ot_trials = raycompat.optuna_trials(searcher)
    ids = {r.metrics["trial_id"] for r in grid}
    assert set(ot_trials) == ids and raycompat.completed_trials(searcher) == ids
    for ot in ot_trials.values():
        frozen = raycompat.stored_trial(study, ot)
        assert frozen.number == ot.number and frozen.state == optuna.trial.TrialState.COMPLETE


def test_cluster_switch_and_address():
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    try:
        raycompat.set_cluster_mode(not before)
        assert ray_constants.ENABLE_RAY_CLUSTER is (not before)
    finally:
        raycompat.set_cluster_mode(before)
    address = raycompat.read_ray_address()
    assert address is None or re.fullmatch(r"[\w.\-\[\]:]+:\d+", address), address


def _held_upload_manager(tmp_path, events: list, fail: bool = False):
    """Tune's experiment-state manager, patched, over a syncer whose upload holds until someone waits on
    it (logged in `events`), then ends or fails; (manager, the event that releases the upload)."""
    import threading
    from types import SimpleNamespace

    from ray.train._internal.syncer import _BackgroundSyncer
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    waited = threading.Event()

    class HeldUpload(_BackgroundSyncer):
        def _sync_up_command(self, local_path, uri, exclude=None):
            def upload():
                events.append("upload starts")
                assert waited.wait(timeout=120), "nobody waited for the upload"
                if fail:
                    raise TimeoutError()  # no message: the warning must not index an empty text
                events.append("upload ends")
            return upload, {}

        def wait(self, timeout=None):
            if self._sync_process is not None and self._sync_process.is_running:
                events.append("wait")
                waited.set()
            return super().wait(timeout)

    raycompat.save_state_between_uploads()
    raycompat.save_state_between_uploads()  # idempotent: one wrapper, not two
    storage = SimpleNamespace(experiment_driver_staging_path=str(tmp_path / "staging"),
                              experiment_fs_path=str(tmp_path / "remote"), syncer=HeldUpload())
    manager = _ExperimentCheckpointManager(storage=storage, checkpoint_period=0, sync_every_n_trial_checkpoints=None)
    return manager, waited


def _release(manager, waited) -> None:
    waited.set()
    try:
        manager._storage.syncer.wait()
    except TimeoutError:
        pass


def test_a_state_save_never_overlaps_an_upload(tmp_path):
    """Tune's periodic save renamed a temp file inside the folder its background upload was copying:
    the upload failed with a traceback (CI, 2026-12-05). Patched, an unforced save while an upload
    runs is put off, and a forced one waits for the upload first. The upload here holds until the
    save path waits on it, so an unpatched save would land in the middle of it."""
    events = []
    manager, waited = _held_upload_manager(tmp_path, events)
    try:
        manager.sync_up_experiment_state(lambda: events.append("save 1"), force=True)
        manager.sync_up_experiment_state(lambda: events.append("save 2"))  # the upload of save 1 runs
        manager.sync_up_experiment_state(lambda: events.append("save 3"), force=True, wait=True)
    finally:
        _release(manager, waited)
    assert "save 2" not in events
    assert events.index("upload ends") < events.index("save 3"), events
    assert events[:2] == ["save 1", "upload starts"] and events.count("upload starts") == 2


def test_a_failed_upload_before_a_forced_save_is_one_warning_and_the_save_goes_on(tmp_path, caplog):
    events = []
    manager, waited = _held_upload_manager(tmp_path, events, fail=True)
    saved = []
    try:
        manager.sync_up_experiment_state(lambda: saved.append(1), force=True)
        with caplog.at_level("WARNING", logger="tuner.raycompat"):
            manager.sync_up_experiment_state(lambda: saved.append(2), force=True)
    finally:
        _release(manager, waited)
    assert saved == [1, 2]
    assert [r.getMessage() for r in caplog.records if r.name == "tuner.raycompat"] == [
        f"saving the sweep state to {tmp_path / 'remote'} failed once (TimeoutError: ); saving again"]


def test_a_renamed_attribute_names_itself(fitted):
    """What an upgrade that renames one looks like: the attribute, the checked versions, the file to fix."""
    class Renamed:  # OptunaSearch after a hypothetical rename of _ot_study
        _study = None

    with pytest.raises(raycompat.RayCompatError) as e:
        raycompat.optuna_study(Renamed())
    msg = str(e.value)
    assert "Renamed._ot_study is gone" in msg and raycompat.CHECKED in msg and "tuner/raycompat.py" in msg
    assert os.path.basename(raycompat.__file__) in msg


def test_every_adapter_function_is_exercised_here():
    import inspect

    own = [n for n, f in vars(raycompat).items() if inspect.isfunction(f) and not n.startswith("_")
           and f.__module__ == raycompat.__name__]
    with open(__file__) as fh:
        body = fh.read().split("def test_every_adapter_function_is_exercised_here")[0]
    assert own and [n for n in own if f"raycompat.{n}(" not in body] == []
    assert all("Checked against" in (getattr(raycompat, n).__doc__ or "") for n in own)


def test_a_resumed_sweep_counts_the_wall_time_of_its_earlier_runs(tmp_path):
    """summary.json's wall_seconds is the sweep's total over every run and resume of it."""
    import json
    import time

    from tuner import pipeline, sweep

    assert sweep._wall_before(str(tmp_path)) == 0.0  # no earlier run wrote a summary (or it was killed)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted", "wall_seconds": 120.5}))
    assert sweep._wall_before(str(tmp_path)) == 120.5
    (tmp_path / "summary.json").write_text("{not json")
    assert sweep._wall_before(str(tmp_path)) == 0.0
    ctx = pipeline.Context(*[None] * 9, t_start=time.time() - 3.0, resumed=True, wall_before=120.5)
    assert 123.4 < ctx.wall() < 130
