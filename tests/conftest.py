import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs seconds on 2 cores)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
