"""Helpers for the fault scenarios (tests/tuner_tests/test_fault_scenarios.py): a `tuner` subprocess in its own
process group (killed, with any Ray it started, when the test ends), waiting on MLflow with a deadline."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Callable, Iterator

from helpers import kill_group, tracking_uri

# FAULTKIT_CODE: run the scenarios against another checkout (e.g. to see them fail before a fix)
ROOT = os.environ.get("FAULTKIT_CODE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def tuner_process(args: list[str], log_dir, env: dict | None = None, name: str = "tuner") -> Iterator[subprocess.Popen]:
    """`python -m tuner ARGS` with this worktree's code; stdout/stderr to files (a full pipe would
    block it). Its whole process group is SIGKILLed in `finally`, also when the test fails."""
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    with open(os.path.join(log_dir, f"{name}.out"), "w") as out, open(os.path.join(log_dir, f"{name}.err"), "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "tuner", *args], stdout=out, stderr=err, env=env,
                             cwd=str(log_dir), start_new_session=True)
        try:
            yield p
        finally:
            kill_group(p)


def stderr_of(log_dir, name: str = "tuner") -> str:
    with open(os.path.join(log_dir, f"{name}.err")) as fh:
        return fh.read()


def finish(p: subprocess.Popen, timeout: float) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"tuner did not exit within {timeout}s") from None


def wait_until(pred: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Poll `pred` until it holds; fail at the deadline or if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - e.g. the database is still being created
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"tuner exited ({proc.returncode}) before: {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


def mlflow_runs(out_dir, query: str = "") -> list:
    """The runs in OUT/mlflow.db; none before tuner has created it. Never creates it: a client opening
    a missing SQLite file creates the tables, racing tuner's own creation (which then exits 2)."""
    from mlflow.tracking import MlflowClient

    from tuner.recover import output_lock

    if not os.path.isfile(os.path.join(str(out_dir), "mlflow.db")):
        return []
    with output_lock(str(out_dir)):  # held by tuner while it creates the tables
        client = MlflowClient(tracking_uri(out_dir))
        exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], query, max_results=1000) if exps else []


def trial_runs(out_dir) -> list:
    return mlflow_runs(out_dir, "tags.`tuner.trial_id` != ''")


def parent_runs(out_dir) -> list:
    return mlflow_runs(out_dir, "tags.`tuner.role` = 'sweep'")


def corrupt(path: str, n: int = 300) -> None:
    """Write n random bytes over the start of a file (a torn write / bit rot)."""
    with open(path, "r+b") as fh:
        fh.write(os.urandom(n))


def checkpoint_of_epoch(trial_dir: str, epoch: int) -> str:
    """The trial's checkpoint folder holding the state after `epoch`."""
    import torch

    for d in sorted(os.listdir(trial_dir)):
        path = os.path.join(trial_dir, d, "state.pt")
        if d.startswith("checkpoint_") and os.path.isfile(path) and torch.load(path, weights_only=True)["epoch"] == epoch:
            return os.path.join(trial_dir, d)
    raise AssertionError(f"{trial_dir}: no checkpoint of epoch {epoch}")


def trial_dirs(sweep_dir: str) -> list[str]:
    ray_dir = os.path.join(sweep_dir, "ray")
    return sorted(os.path.join(ray_dir, d) for d in os.listdir(ray_dir) if os.path.isdir(os.path.join(ray_dir, d))
                  and any(x.startswith("checkpoint_") for x in os.listdir(os.path.join(ray_dir, d))))


def descendants(root: int) -> list[int]:
    """Pids of every process below `root` (from /proc): only our own Ray's workers, never another
    user's or another test session's."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def trial_workers() -> list[int]:
    """This process's Ray workers that run a trial (Ray titles them ray::ImplicitFunc...)."""
    return [p for p in descendants(os.getpid()) if "ImplicitFunc" in cmdline(p)]
