import fnmatch
import os
import shutil
import subprocess

import pytest
from helpers import torch_threads

import leaks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Written by the tools themselves, not by a test: pytest's cache, bytecode, Hypothesis' example
# database, the editable install's metadata.
TOOL_LITTER = (".pytest_cache", "__pycache__", ".hypothesis", "*.egg-info")


def checkout_state() -> set[str] | None:
    """`git status --porcelain --ignored` of the repository, one entry per untracked or ignored
    path (untracked folders collapsed, as git prints them). Edits to tracked files are left out: a
    developer saving a file while the suite runs is not a test writing it. None where git is missing or
    the tests do not run from a git checkout (an sdist, a copied tree): nothing to compare then."""
    if shutil.which("git") is None:
        return None
    try:
        top = subprocess.run(["git", "-C", ROOT, "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=60)
        if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(ROOT):
            return None
        st = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--ignored"], capture_output=True,
                            text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = set()
    for line in st.stdout.splitlines():
        if line[:2] not in ("??", "!!"):
            continue
        parts = line[3:].rstrip("/").split("/")
        if not any(fnmatch.fnmatch(part, pat) for part in parts for pat in TOOL_LITTER):
            lines.add(line)
    return lines


def xdist_worker(config) -> bool:
    """A pytest-xdist worker (`pytest -n 2`): the controller checks what the whole session left, once
    every worker has ended; a worker checking too would take the other worker's live Ray for a leak
    (both carry the controller's token) and kill it."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    if xdist_worker(session.config):
        leaks.snapshot()  # the token inherited from the controller (setdefault keeps it)
        return
    session.config._tuner_leaks = leaks.snapshot()
    session.config._tuner_checkout = checkout_state()


def pytest_sessionfinish(session, exitstatus):
    """The session fails if it leaves a Ray process or a ray_current_cluster file behind (a left-over
    cluster made later runs, CI and other tests hang for minutes), or a new path in the
    repository checkout (test outputs belong under tmp_path)."""
    problems = []
    before = getattr(session.config, "_tuner_checkout", None)
    after = checkout_state() if before is not None else None
    if after is not None:  # outputs belong under tmp_path; a file in the checkout ends up committed
        problems += [f"written into the repository checkout: {line}" for line in sorted(after - before)]
    before = getattr(session.config, "_tuner_leaks", None)
    if before is not None:
        problems += leaks.left_behind(before)
    if problems:
        print("\n" + "\n".join(f"tests left behind: {p}" for p in problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every model in these tests is tiny: torch's intra-op threads only add synchronisation, and
    on a shared 2-core machine they made tests up to 10x slower. Per test, since code under test
    may set the count itself (tuner/trainable.py does); Ray workers and subprocesses are unaffected."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray for the whole test session (ray.init costs seconds on 2 cores)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    from tuner import cluster

    cluster.start(None, 0, num_cpus=2, object_store_memory=150 * 1024**2, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
