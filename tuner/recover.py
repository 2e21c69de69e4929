"""Faults around a sweep's driver: Ctrl+C/SIGTERM, a driver killed with SIGKILL, two sweeps at once.

- Interruption: Ray Tune's own SIGINT handler only sets a private event and then lets `fit` return
  normally, so a one-trial sweep cut short looked finished. `catching()` installs our SIGINT
  handler for the duration of `fit`, remembers the interruption in `INTERRUPTED` (read by the
  callbacks and the searcher on this driver), and forwards it to Tune through SIGUSR1, which Tune
  always handles with the same "stop and save" function.
- A driver killed by SIGKILL leaves MLflow runs and Optuna trials that Ray never saved in its
  experiment state: `close_lost` ends them on the next resume.
- `output_lock` serialises MLflow/Optuna database creation between sweeps sharing an --output.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

INTERRUPTED = threading.Event()
LOST_REASON = "lost: the driver died before Ray saved this trial in its experiment state"


def sigterm_as_sigint() -> None:
    """SIGTERM (a job scheduler's stop, `kill`) stops a sweep like Ctrl+C: Ray Tune saves its state,
    the driver says so in one line and `tuner resume` continues. Main thread only (Python's rule)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


@contextlib.contextmanager
def keeping_sigterm() -> Iterator[None]:
    """Around ray.init: Ray sets its own SIGTERM handler (sys.exit) and its core worker then installs
    a C++ crash handler over it, which prints a stack dump and kills the driver, so a SIGTERM never
    reached sigterm_as_sigint's handler. A Python handler set before ray.init is put back after it."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(before):  # ours (or the embedding program's); Ray's stay where nobody set one
            signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def catching() -> Iterator[threading.Event]:
    """While `fit` runs: the first SIGINT stops Tune cleanly and sets INTERRUPTED; a second one
    raises KeyboardInterrupt (hard stop, as with Tune's own handler)."""
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield INTERRUPTED  # signal handlers can only be set on the main thread
        return
    before_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    before = signal.getsignal(signal.SIGINT)

    def on_sigint(sig, frame):
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        INTERRUPTED.set()
        tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune's "stop the experiment" handler
        if not callable(tune_handler):  # Tune's loop has not started yet: stop at once
            raise KeyboardInterrupt
        tune_handler(sig, frame)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, before)
        if before_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before_env


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """An exclusive lock on OUTPUT/.tuner.lock: MLflow's alembic migration and Optuna's table
    creation are not safe when two processes create the same SQLite database at once."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, ".tuner.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def unique_dir(parent: str, name: str) -> str:
    """Create parent/name, or name-2, name-3, ... if a sweep started in the same second took it."""
    for i in range(1, 1000):
        path = os.path.join(parent, name if i == 1 else f"{name}-{i}")
        try:
            os.makedirs(path, exist_ok=False)
            return os.path.abspath(path)
        except FileExistsError:
            continue
    raise RuntimeError(f"{parent}: no free sweep folder name for {name}")


def close_lost(runs_cb, searcher, known: Iterable[str]) -> list[str]:
    """Trial ids with an MLflow run that Ray's restored state does not know (the driver was killed
    before Ray saved them): end their runs as `lost` and tell their Optuna trials FAIL."""
    from mlflow.entities import RunTag

    known = set(known)
    lost = [tid for tid in runs_cb.runs if tid not in known]
    for tid in lost:
        run_id = runs_cb.runs[tid]
        run = runs_cb.safe(runs_cb.client.get_run, run_id)
        if run is not None and run.data.tags.get("status") == "lost" and run.info.status != "RUNNING":
            continue  # closed by an earlier resume
        runs_cb.safe(runs_cb.client.log_batch, run_id,
                      tags=[RunTag("status", "lost"), RunTag("stop_reason", LOST_REASON)])
        runs_cb.safe(runs_cb.client.set_terminated, run_id, "FAILED")
    if lost:
        log.warning("%d trial(s) lost when the driver died; recorded as lost", len(lost))
    if searcher is not None:
        fail_orphan_optuna_trials(searcher)
    return lost


def fail_orphan_optuna_trials(searcher) -> int:
    """Optuna trials still RUNNING that no Ray trial owns any more: tell them FAIL (else they stay
    RUNNING in optuna.db forever and optuna-dashboard shows them as in progress)."""
    import optuna

    from tuner import raycompat

    study = raycompat.optuna_study(searcher)
    owned = {t.number for t in raycompat.optuna_trials(searcher).values()}
    sweep = searcher.owner  # a study shared by sweeps: fail only this sweep's
    done = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number in owned or (sweep and t.user_attrs.get("tuner.sweep") != sweep):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            done += 1
        except Exception as e:  # noqa: BLE001 - e.g. another process finished it meanwhile
            log.warning("could not fail orphan Optuna trial %s: %s", t.number, e)
    return done
