import os

import pytest

import leaks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def pytest_sessionstart(session):
    session.config._tuner_leaks = leaks.snapshot()


def pytest_sessionfinish(session, exitstatus):
    """The session fails if it leaves a Ray process or a ray_current_cluster file behind: a left-over
    cluster made later runs, CI and other tests hang for minutes."""
    before = getattr(session.config, "_tuner_leaks", None)
    if before is None:
        return
    problems = leaks.left_behind(before)
    if problems:
        print("\n" + "\n".join(f"tests left behind: {p}" for p in problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
