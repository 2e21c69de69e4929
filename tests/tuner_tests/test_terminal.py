"""What a user sees on a terminal: the default sweep's output counted through a pseudo-terminal (so the
TTY code paths run), --quiet, no library noise, 120-column tables, the live progress line, --version."""

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.helpers import kill_group

REPO = Path(__file__).resolve().parents[2]
NOISE = ("Creating initial MLflow database tables", "Updating database tables", "Token authentication is enabled",
         "get_trial interface", "process_trial_result", "View detailed results here", "TensorBoard",
         "A new study created", "Traceback (most recent call last)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# the default sweep's code path and defaults, made short: 6 trials of at most 6 epochs (ASHA rung at 2)
# on a third of the default data
SHORT = ["--set", "search.samples=6", "--max-epochs", "6", "--set", "data.synthetic.n_users=1000",
         "--set", "data.synthetic.n_items=400"]


def run_in_pty(args, cwd, timeout=300.0):
    """`python -m tuner ARGS` with stdout and stderr on one pseudo-terminal; (exit code, text)."""
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    p = subprocess.Popen([sys.executable, "-m", "tuner", *args], stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=slave, cwd=cwd, env=env, start_new_session=True)
    os.close(slave)  # the child holds the only copy: reading gets EIO once it (and its group) closes it
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            pytest.fail(f"tuner {' '.join(args)} ran past {timeout}s")
        code = p.wait(timeout=60)
    finally:
        os.close(master)
        kill_group(p)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, ANSI.sub("", text)  # colour codes (a reset at exit) take no room on the screen


def assert_clean(text: str) -> None:
    found = [n for n in NOISE if n in text]
    assert not found, f"library noise {found} in:\n{text}"


@pytest.mark.ray
def test_default_sweep_fits_40_lines_on_a_terminal(tmp_path):
    code, text = run_in_pty(["run", str(REPO / "search_spaces/bpr.yaml"), *SHORT, "--output", str(tmp_path / "o")],
                            tmp_path)
    lines = text.rstrip().split("\n")
    assert code == 0, text
    assert len(lines) <= 40, f"{len(lines)} lines:\n{text}"
    assert_clean(text)
    assert "6/6 done" in text and "best val_ndcg_10" in text, text  # the live view, with the objective
    assert "stopped early" in text, text  # ASHA stopped some at its rung: counted apart
    summary = text[text.index("== bpr"):].split("\n")
    table = summary[1:summary.index("")]  # the trials table: header and rows up to the first blank line
    assert table and max(map(len, table)) <= 120, "\n".join(table)


@pytest.mark.ray
def test_quiet_prints_only_the_summary(tmp_path):
    # the smoke variant (2 trials x 2 epochs): --quiet's output does not depend on the sweep's size
    code, text = run_in_pty(["run", str(REPO / "search_spaces/bpr.yaml"), "--smoke-test", "--output",
                             str(tmp_path / "o"), "--quiet"], tmp_path)
    lines = text.strip().split("\n")
    assert code == 0, text
    assert len(lines) <= 15, f"{len(lines)} lines:\n{text}"
    assert_clean(text)
    assert "done" not in lines[0] and lines[0].startswith("== bpr"), text


@pytest.mark.ray  # a `python -m tuner` subprocess
def test_version():
    p = subprocess.run([sys.executable, "-m", "tuner", "--version"], capture_output=True, text=True, cwd=REPO,
                       timeout=60, start_new_session=True)
    assert p.returncode == 0 and p.stdout.startswith("tuner ") and p.stdout.split()[1][0].isdigit(), p


@pytest.mark.ray  # a `python -m tuner` subprocess
def test_a_reader_that_leaves_early_is_not_an_error():
    """`tuner show x.yaml | head -1`: a closed pipe ends tuner quietly (141, as `yes | head`). The
    reading end is closed before tuner starts, so its first write meets the closed pipe."""
    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run([sys.executable, "-m", "tuner", "show", str(REPO / "search_spaces/sasrec.yaml")],
                           stdout=write, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write)
    assert p.returncode == 141 and "error" not in p.stderr, p.stderr


def _trial(tid, status, epoch=None, config=None, stop_reason=None):
    last = {} if epoch is None else {"epoch": epoch, **({"stop_reason": stop_reason} if stop_reason else {})}
    return SimpleNamespace(trial_id=tid, status=status, last_result=last, config=config or {})


def test_a_ray_housekeeping_traceback_shows_as_one_line():
    """Ray logs a failed background upload of the sweep state with its whole stack (CI, 2026-12-05:
    18 lines in the middle of the progress lines); the next upload retries, so one line says it."""
    import io
    import logging

    from tuner import progress

    progress.quiet_libraries()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    loggers = [logging.getLogger(n) for n in progress.ONE_LINE_LOGGERS]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        try:
            open("/nonexistent/.tmp-searcher-state.pkl")
        except FileNotFoundError:
            loggers[0].error("Saving experiment state to storage at '%s' failed with exception: ", "/s/ray",
                             exc_info=True)
        try:
            raise FileNotFoundError(2, "Failed to open local file")
        except FileNotFoundError:
            import traceback

            loggers[1].warning(f"Last sync command failed with the following error:\n{traceback.format_exc()}")
        loggers[0].warning("Saving the experiment state took ~31.00 seconds")  # no traceback: unchanged
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines == [
        "Saving experiment state to storage at '/s/ray' failed with exception: FileNotFoundError: [Errno 2] "
        "No such file or directory: '/nonexistent/.tmp-searcher-state.pkl'",
        "Last sync command failed with the following error: FileNotFoundError: [Errno 2] Failed to open local file",
        "Saving the experiment state took ~31.00 seconds"]


def test_progress_line_counts_and_best():
    from tuner.progress import Progress

    prog = Progress("val_ndcg_10", "max", 6, SimpleNamespace(numbers={"b": 2}), lambda c: 6, interval=0.0)
    trials = [_trial("a", "TERMINATED", 6), _trial("b", "TERMINATED", 2), _trial("c", "ERROR", 1),
              _trial("d", "RUNNING", 3), _trial("e", "PAUSED", 2), _trial("f", "PENDING")]
    prog.on_trial_result(0, trials, trials[0], {"val_ndcg_10": 0.05})
    prog.on_trial_result(0, trials, trials[1], {"val_ndcg_10": 0.09})
    line = prog.line(prog.counts(trials))
    assert "1 running, 1 paused, 3/6 done (1 completed, 1 stopped early, 1 errored)" in line, line
    assert "best val_ndcg_10 0.0900 (trial 2)" in line and "left" in line, line
    assert max(map(len, line.split("\n"))) <= 120, line  # a full line wraps onto a second one


def test_progress_line_names_trial_0_by_its_number():
    """Trial 0 leading printed Ray's id (`trial cb1d0_00001`): its number 0 was read as 'no number'."""
    from tuner.progress import Progress

    prog = Progress("val_ndcg_10", "max", 2, SimpleNamespace(numbers={"a0": 0}), lambda c: 2, interval=0.0)
    trials = [_trial("a0", "RUNNING", 1), _trial("b1", "PENDING")]
    prog.on_trial_result(0, trials, trials[0], {"val_ndcg_10": 0.05})
    assert "best val_ndcg_10 0.0500 (trial 0)" in prog.line(prog.counts(trials))


def test_progress_line_after_ctrl_c_counts_cut_trials_as_interrupted_not_stopped():
    """The line takes each trial's ending from the MLflow callback (as trials.csv does): one Ctrl+C cut is
    interrupted (resume runs it on) and not done; one ASHA cut before the Ctrl+C stays stopped early."""
    from tuner.progress import Progress

    runs = SimpleNamespace(numbers={}, final={"a": "completed", "b": "stopped_early", "c": "interrupted"})
    prog = Progress("val_ndcg_10", "max", 6, runs, lambda c: 6, interval=0.0)
    trials = [_trial("a", "TERMINATED", 6), _trial("b", "TERMINATED", 2), _trial("c", "TERMINATED", 4),
              _trial("d", "PAUSED", 3)]
    line = prog.line(prog.counts(trials))
    assert "0 running, 1 paused, 1 interrupted, 2/6 done (1 completed, 1 stopped early)" in line, line


def test_progress_line_of_a_resumed_sweep_names_the_sweeps_best_not_the_best_since_the_resume():
    """Seen on the Beauty sweep's resume: the line said best 0.0581 (trial 25) while trials.csv's best was
    0.0636 (trial 23, finished before the interrupt). The MLflow callback reloads each trial's best."""
    from tuner.progress import Progress

    runs = SimpleNamespace(numbers={"a": 23, "b": 25}, final={"a": "completed"}, best={"a": (0.0636, 8)})
    prog = Progress("val_ndcg_10", "max", 40, runs, lambda c: 40, interval=0.0)
    trials = [_trial("a", "TERMINATED", 40), _trial("b", "RUNNING", 30)]
    prog.on_trial_result(0, trials, trials[1], {"val_ndcg_10": 0.0581})
    runs.best["b"] = (0.0581, 30)
    prog.on_step_end(0, trials)
    assert "best val_ndcg_10 0.0636 (trial 23)" in prog.line(prog.counts(trials))


def test_progress_estimate_of_a_resumed_sweep_uses_this_runs_pace():
    """Seen on the Beauty sweep's resume: 19 of 40 trials were done before it, so 20 s in the line said
    ~0:21 left. The estimate now divides by the work done since the resume."""
    from tuner.progress import Progress

    prog = Progress("val_ndcg_10", "max", 4, SimpleNamespace(numbers={}, final={}), lambda c: 10, interval=0.0)
    done = [_trial("a", "TERMINATED", 10), _trial("b", "TERMINATED", 10)]
    start = done + [_trial("c", "RUNNING", 0), _trial("d", "PENDING")]
    prog.on_step_end(0, start)  # the resume's first step: half the sweep done, none of it by this run
    assert "left" not in prog.line(prog.counts(start))
    prog.t0 -= 100  # 100 s into this run, trial c is at epoch 5 of 10: 0.5 + 0.125 of the sweep
    line = prog.line(prog.counts(done + [_trial("c", "RUNNING", 5), _trial("d", "PENDING")]))
    assert "~5:00 left" in line, line  # 0.375 to go at 0.125 per 100 s (the old estimate: ~1:00)


def test_terminal_table_fits_120_columns():
    from tuner import termtable

    table = pd.DataFrame({"trial": [1], "stop_reason": ["mismatch: " + "x" * 200],
                          **{f"knob_number_{i}": [0.123456] for i in range(20)}})
    text = termtable.render(table)
    assert max(map(len, text.splitlines())) <= 120, text
    assert "see trials.csv" in text and "x" * 50 not in text
