"""What a sweep prints while it runs: a few status lines instead of Ray's tables, and no library noise.

`Progress` is a Ray Tune Callback (it sees every trial's status on each step of Tune's loop) that prints
one line when the picture changed: trials running / paused / done (completed, stopped early, errored),
the best value so far with its trial, elapsed time and an estimate of the time left. Lines are throttled
(a trial's end after 5 s, any other change after `interval` s; the last state always) and written as plain lines, so a log file or a pipe
reads the same as a terminal. `--verbose` shows Ray's own tables instead; `--quiet` neither.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, TextIO

from ray.tune import Callback

# Ray's experiment box and TensorBoard hint come from its "new output" reporter even at verbose=0;
# the legacy engine at verbose=0 prints nothing, so Progress is the only live output.
_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
_user_new_output = os.environ.get(_NEW_OUTPUT_ENV)
MIN_GAP_S = 5.0  # the least time between two lines


class _DropMessage(logging.Filter):
    """Drops the records of one logger that start with one of `prefixes`, and nothing else it says."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefix = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


class _OneLine(logging.Filter):
    """A record that carries a traceback (as exc_info, or pasted into its text) shows as one line:
    its first line and the exception's. Ray logs a failed background upload of the sweep state so;
    the next upload retries it, and a user has nothing to read in Ray's stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        marker = "Traceback (most recent call last)"
        text = str(record.getMessage())
        if not record.exc_info and marker not in text:
            return True
        head = (text.split(marker)[0].strip().splitlines() or [""])[0]
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            tail = f"{type(error).__name__}: {error}"
        else:
            tail = ([ln for ln in text.split(marker)[-1].splitlines() if ln.strip()] or [""])[-1]
        record.msg, record.args = " ".join(f"{head} {tail}".split()), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


# Ray loggers whose tracebacks are about its own retried housekeeping, never about a trial
ONE_LINE_LOGGERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer")


def _filter_once(name: str, filt: logging.Filter) -> None:
    """`filt` on logger `name`, unless a filter of its class is there already (quiet_libraries runs per sweep)."""
    log = logging.getLogger(name)
    if not any(isinstance(f, type(filt)) for f in log.filters):
        log.addFilter(filt)


def quiet_libraries() -> None:
    """Silence the lines every normal run printed and nobody acts on; warnings that matter still show."""
    # informational: a fresh sqlite store is created on each new output folder
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # the default local Ray enables token auth and says so; the "disabled" warning still shows
    _filter_once("ray._private.authentication.authentication_token_setup",
                 _DropMessage("Token authentication is enabled"))
    # on an interruption Ray Tune names its own API (Tuner.restore) where ours prints `tuner resume`,
    # and lists the trials the interruption cut before their first result (trials.csv has them)
    _filter_once("ray.tune.tune", _DropMessage("Experiment has been interrupted", "Training has been interrupted"))
    _filter_once("ray.tune.analysis.experiment_analysis", _DropMessage("Failed to fetch metrics for"))
    for name in ONE_LINE_LOGGERS:
        _filter_once(name, _OneLine())
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..."


def ray_verbosity(verbose: int) -> int:
    """Ray Tune's `verbose` for our verbosity (0 quiet, 1 default, 2 verbose); picks Ray's output engine."""
    if verbose >= 2:
        if _user_new_output is None:
            os.environ.pop(_NEW_OUTPUT_ENV, None)  # Ray's tables exactly as Ray prints them by default
        return 2
    os.environ[_NEW_OUTPUT_ENV] = "0"  # read by tune.run at each fit
    return 0


def callbacks(verbose: int, metric: str, mode: str, samples: int,
              runs: Any = None, epochs_of: Callable | None = None) -> list:
    """The live view for the default verbosity; nothing for --quiet or --verbose."""
    if verbose != 1:
        return []
    return [Progress(metric, mode, samples, runs, epochs_of)]


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress(Callback):
    """One line per change worth reading, e.g.
    `[1:05] 2 running, 1 paused, 5/16 done (3 completed, 2 stopped early) | best val_ndcg_10 0.0924 (trial 2) | ~2:10 left`
    """

    def __init__(self, metric: str, mode: str, samples: int, runs: Any = None,
                 epochs_of: Callable | None = None, interval: float = 20.0, out: TextIO | None = None):
        self.metric, self.sign, self.samples = metric, (1.0 if mode == "max" else -1.0), int(samples)
        # runs: the MLflow callback, whose `numbers` (Ray trial id -> trial number) name trials as MLflow does
        self.runs, self.epochs_of, self.interval = runs, epochs_of, interval
        self.out = out
        self.t0 = time.time()
        self.best: tuple[float, str] | None = None
        self.last_key: tuple | None = None
        self.last_print = 0.0
        self.f0: float | None = None  # share of the sweep done at this run's first step (0 unless resumed)

    def setup(self, **info) -> None:
        self.t0 = time.time()  # the clock starts with this fit (a resumed sweep: with the resume)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            if self.best is None or self.sign * value > self.sign * self.best[0]:
                self.best = (float(value), trial.trial_id)

    def _merge_best(self) -> None:
        """The MLflow callback's per-trial best, which a resumed sweep reloads from MLflow: the best
        line then names the sweep's best trial, not the best since the resume."""
        for tid, (value, _) in (getattr(self.runs, "best", None) or {}).items():
            if isinstance(value, (int, float)) and not math.isnan(value) and (
                    self.best is None or self.sign * value > self.sign * self.best[0]):
                self.best = (float(value), tid)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._merge_best()
        counts = self.counts(trials)
        if self.f0 is None:  # the work a resumed sweep had done before this run: not this run's pace
            self.f0 = counts["fraction"]
        key = (counts["done"], counts["running"], counts["paused"], self.best)
        now = time.time()
        ended = self.last_key is not None and counts["done"] != self.last_key[0]
        # a trial ending is news, but trials that end together (ASHA stops several at a rung) share a line
        wait = min(self.interval, MIN_GAP_S) if ended else self.interval
        if key != self.last_key and now - self.last_print >= wait:
            self.emit(counts)
            self.last_key, self.last_print = key, now

    def on_experiment_end(self, trials: list, **info) -> None:
        self._merge_best()
        counts = self.counts(trials)
        if (counts["done"], counts["running"], counts["paused"], self.best) != self.last_key:
            self.emit(counts)

    def counts(self, trials: list) -> dict[str, int]:
        c = dict.fromkeys(("running", "paused", "pending", "done", "completed", "stopped early", "errored",
                           "interrupted"), 0)
        for t in trials:
            if t.status == "RUNNING":
                c["running"] += 1
            elif t.status == "PAUSED":
                c["paused"] += 1
            elif t.status == "PENDING":
                c["pending"] += 1
            else:
                ending = self._ending(t)
                c[ending] += 1
                c["done"] += ending != "interrupted"  # Ctrl+C ended it: `tuner resume` runs it on
        c["fraction"] = self._fraction(trials)
        return c

    def _planned(self, trial) -> int | None:
        try:
            return int(self.epochs_of(trial.config)) if self.epochs_of else None
        except Exception:  # noqa: BLE001 - a config the counter cannot read: no epoch-based estimate
            return None

    def _ending(self, trial) -> str:
        if trial.status == "ERROR":
            return "errored"
        final = getattr(self.runs, "final", {}).get(trial.trial_id)  # its MLflow status, set as it ended
        if final:  # one truth with trials.csv: a trial Ctrl+C cut is interrupted, ASHA's cut stopped early
            return {"completed": "completed", "interrupted": "interrupted", "errored": "errored"}.get(
                final, "stopped early")
        last = trial.last_result or {}
        planned = self._planned(trial)
        ran = int(last.get("epoch", last.get("training_iteration", 0)) or 0)
        if last.get("stop_reason"):
            return "stopped early"
        if planned and ran < planned:
            return "stopped early"
        return "completed"

    def _fraction(self, trials: list) -> float:
        """Share of the sweep's work done: finished trials count whole, live ones by epochs run."""
        done = 0.0
        for t in trials:
            if t.status in ("TERMINATED", "ERROR"):
                done += 1.0
            elif t.status in ("RUNNING", "PAUSED"):
                planned = self._planned(t)
                ran = (t.last_result or {}).get("epoch", 0) or 0
                done += min(0.99, ran / planned) if planned else 0.0
        return done / max(1, self.samples)

    def line(self, c: Mapping[str, Any]) -> str:
        """Zero counts are left out (a compact line); past 120 columns best and ETA go on a second line."""
        elapsed = time.time() - self.t0
        live = ", ".join(f"{c[k]} {k}" for k in ("running", "paused", "interrupted") if c[k] or k == "running")
        ends = ", ".join(f"{c[k]} {k}" for k in ("completed", "stopped early", "errored") if c[k])
        head = f"[{clock(elapsed)}] {live}, {c['done']}/{self.samples} done" + (f" ({ends})" if ends else "")
        tail = []
        if self.best is not None:
            number = getattr(self.runs, "numbers", {}).get(self.best[1])
            tail.append(f"best {self.metric} {self.best[0]:.4f} (trial {self.best[1] if number is None else number})")
        f = c["fraction"]
        f0 = self.f0 or 0.0
        if c["done"] < self.samples and f - f0 > 0.02:
            tail.append(f"~{clock(elapsed * (1 - f) / (f - f0))} left")
        text = " | ".join([head, *tail])
        return text if len(text) <= 120 else head + "\n    " + " | ".join(tail)

    def emit(self, c: Mapping[str, Any]) -> None:
        out = self.out or sys.stdout
        print(self.line(c), file=out, flush=True)
