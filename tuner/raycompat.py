"""Every private Ray Tune / Optuna attribute the tuner reads, in one place.

Ray and Optuna give no public way to reach these (the Tuner's callbacks and search algorithm, a
ResultGrid's Trial objects, OptunaSearch's study and trials, Ray's single-machine switch, and the one
method we wrap: Tune's experiment-state save, so it never races its own upload), so an
upgrade may rename them without notice. Each function names the versions it was checked against,
and tests/test_raycompat.py exercises all of them on the installed versions: a rename fails there
with a `RayCompatError` naming the attribute, not as an AttributeError deep inside a sweep.
"""

from __future__ import annotations

import logging
import types
from typing import Any

log = logging.getLogger(__name__)

CHECKED = "ray 2.60.0, optuna 5.1.0"
_MISSING = object()


class RayCompatError(AttributeError):
    """A private attribute the tuner relies on is gone: the installed Ray/Optuna changed it."""


def _attr(obj: Any, name: str) -> Any:
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        owner = obj.__name__ if isinstance(obj, types.ModuleType) else f"{type(obj).__module__}.{type(obj).__name__}"
        raise RayCompatError(f"{owner}.{name} is gone (tuner/raycompat.py "
                             f"was checked against {CHECKED}); adapt tuner/raycompat.py to the installed version")
    return value


def tuner_callbacks(tuner) -> list:
    """The callbacks of a Tuner's RunConfig, also for a Tuner.restore()d one.
    Checked against ray 2.60.0: Tuner._local_tuner.get_run_config()."""
    return list(_attr(tuner, "_local_tuner").get_run_config().callbacks or [])


def tuner_stopper(tuner):
    """The stopper of a Tuner's RunConfig (None when it has none), also for a Tuner.restore()d one.
    Checked against ray 2.60.0: Tuner._local_tuner.get_run_config().stop."""
    return _attr(tuner, "_local_tuner").get_run_config().stop


def trial_best(trial, metric: str, mode: str) -> float | None:
    """The best value of `metric` a Trial has reported (None before any).
    Checked against ray 2.60.0: Trial.metric_analysis[metric]["max" | "min"]."""
    value = (trial.metric_analysis or {}).get(metric, {}).get(mode)
    return float(value) if isinstance(value, (int, float)) else None


def tuner_search_alg(tuner):
    """The search algorithm of a Tuner's TuneConfig (a restored Tuner's is unpickled from its state).
    Checked against ray 2.60.0: Tuner._local_tuner._tune_config.search_alg."""
    return _attr(_attr(tuner, "_local_tuner"), "_tune_config").search_alg


def tuner_scheduler(tuner):
    """The trial scheduler of a Tuner's TuneConfig (a restored Tuner's is unpickled from its state).
    Checked against ray 2.60.0: Tuner._local_tuner._tune_config.scheduler."""
    return _attr(_attr(tuner, "_local_tuner"), "_tune_config").scheduler


def rebase_trial_storage(trial, storage_path: str, name: str) -> None:
    """Point a trial at the experiment's storage as it is now. Ray rebases the trials it restores
    when the experiment moved (a folder renamed, a bucket URI changed), but a restored search
    algorithm keeps the old storage in its pickled experiment spec, so every trial it creates
    after `tuner resume --storage` would write (and fail) at the old place.
    Checked against ray 2.60.0: Trial.storage (StorageContext.storage_filesystem, .storage_fs_path,
    .experiment_dir_name), Trial.set_storage, ray.train._internal.storage.get_fs_and_path."""
    import copy

    from ray.train._internal import storage as ray_storage

    fs, fs_path = _attr(ray_storage, "get_fs_and_path")(storage_path)
    new = copy.copy(_attr(trial, "storage"))
    for key, value in (("storage_filesystem", fs), ("storage_fs_path", fs_path), ("experiment_dir_name", name)):
        _attr(new, key)
        setattr(new, key, value)
    _attr(trial, "set_storage")(new)


def grid_trials(grid) -> list:
    """The Trial objects behind a ResultGrid (status, trial_id; a Result carries neither reliably).
    Checked against ray 2.60.0: ResultGrid._experiment_analysis.trials."""
    return list(_attr(grid, "_experiment_analysis").trials)


def optuna_study(searcher):
    """OptunaSearch's Optuna study (None before its search properties are set).
    Checked against ray 2.60.0: OptunaSearch._ot_study."""
    return _attr(searcher, "_ot_study")


def optuna_trials(searcher) -> dict:
    """OptunaSearch's live map Ray trial id -> optuna.Trial (the dict itself: callers may read it as it grows).
    Checked against ray 2.60.0: OptunaSearch._ot_trials."""
    return _attr(searcher, "_ot_trials")


def completed_trials(searcher) -> set:
    """The Ray trial ids OptunaSearch has told Optuna about (the set itself: callers add to it).
    Checked against ray 2.60.0: OptunaSearch._completed_trials."""
    return _attr(searcher, "_completed_trials")


def storage_url(searcher) -> str | None:
    """The URL of the RDB storage an OptunaSearch was given (None for in-memory storage).
    Checked against ray 2.60.0 / optuna 5.1.0: OptunaSearch._storage (an RDBStorage's .url)."""
    return getattr(_attr(searcher, "_storage"), "url", None)


def study_name(searcher) -> str:
    """The study name an OptunaSearch was given. Checked against ray 2.60.0: OptunaSearch._study_name."""
    return _attr(searcher, "_study_name")


def stored_trial(study, trial):
    """The FrozenTrial an optuna.Trial has in storage now (state, intermediate values), without
    loading every trial of the study. Checked against optuna 5.1.0: Study._storage, Trial._trial_id."""
    return _attr(study, "_storage").get_trial(_attr(trial, "_trial_id"))


def set_cluster_mode(on: bool) -> None:
    """Ray's multi-node mode on (join a cluster) or off (a private Ray on 127.0.0.1), for ray.init in
    this process. Checked against ray 2.60.0: ray._private.ray_constants.ENABLE_RAY_CLUSTER."""
    from ray._private import ray_constants

    _attr(ray_constants, "ENABLE_RAY_CLUSTER")
    ray_constants.ENABLE_RAY_CLUSTER = on


def read_ray_address() -> str | None:
    """The address of the Ray cluster started on this machine (`ray start`), or None.
    Checked against ray 2.60.0: ray._private.utils.read_ray_address."""
    from ray._private import utils

    return _attr(utils, "read_ray_address")()


def save_state_between_uploads() -> None:
    """Never write the experiment state while Ray uploads it. Tune saves the trial table and the
    searcher (a temp file, then renamed) into its driver staging folder every ~10 s, and uploads that
    folder in a background thread; a save during an upload renames a file the upload has listed but
    not yet opened, and the upload fails with a traceback on the terminal (CI, 2026-12-05:
    FileNotFoundError on .<uuid>-tmp-searcher-state-*.pkl). Patched once per process: an unforced
    save while an upload runs waits for the next step of Tune's loop (Ray skips that upload anyway),
    a forced one (trial checkpoints, the sweep's end) waits for the upload first.
    Checked against ray 2.60.0: ray.tune.execution.experiment_state._ExperimentCheckpointManager
    (.sync_up_experiment_state, ._storage.syncer, ._should_force_sync_up), _BackgroundSyncer
    (._sync_process.is_running, .wait)."""
    from ray.tune.execution import experiment_state

    manager = _attr(experiment_state, "_ExperimentCheckpointManager")
    original = _attr(manager, "sync_up_experiment_state")
    if getattr(original, "_between_uploads", False):
        return

    def sync_up_experiment_state(self, save_fn, force: bool = False, wait: bool = False):
        syncer = _attr(_attr(self, "_storage"), "syncer")
        upload = _attr(syncer, "_sync_process")
        if upload is not None and upload.is_running:
            if not (force or _attr(self, "_should_force_sync_up")):
                return  # not saved, so Tune's loop asks again on its next step
            try:
                syncer.wait()
            except Exception as e:  # noqa: BLE001 - the upload that follows carries this state too
                first_line = (str(e).splitlines() or [""])[0]
                log.warning("saving the sweep state to %s failed once (%s: %s); saving again",
                            _attr(self, "_storage").experiment_fs_path, type(e).__name__, first_line)
        return original(self, save_fn, force=force, wait=wait)

    sync_up_experiment_state._between_uploads = True
    manager.sync_up_experiment_state = sync_up_experiment_state
