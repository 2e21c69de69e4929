"""Faults: a worker node dies mid-sweep (ray.cluster_utils.Cluster, head + worker on this machine, each
with its own temp folder) while checkpoints go to a bucket (run.storage on moto's S3 server)."""

import json
import os

import pytest
from helpers import run_script

pytestmark = pytest.mark.ray
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where the script lies
# The test waits for the script to exit (it removes the node on an event, see fault_node_loss.py);
# this bound only ends a hang: about 90 s on an idle 2-core machine, several times that under load.
HANG_S = 600


def test_worker_node_loss_resumes_trials_from_bucket_checkpoints():
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
    code, out, err = run_script([os.path.join(HERE, "fault_node_loss.py")], timeout=HANG_S)
    assert code == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert "epochs" in got["removed"], f"the worker node was never removed: {got['removed']}"
    assert got["children"] == 2  # MLflow shows each trial once
    assert got["statuses"] == ["completed", "completed"] and got["run_status"] == ["FINISHED", "FINISHED"]
    assert sum(got["restarts"]) >= 1, "no trial was interrupted: the node died too late"
    for number, steps in got["steps"].items():
        # resumed from its checkpoint: every epoch logged exactly once, none re-run from epoch 1
        assert steps == list(range(1, 31)), (number, steps)
    # only the bucket carried checkpoints: none on the driver's --output or either node's temp folder
    assert got["local_checkpoints"] == []
    assert len(got["in_bucket"]) == 2 and all(n >= 1 for n in got["in_bucket"].values()), got["in_bucket"]
    assert got["test_checkpoint"].startswith("s3://ckpts/tuner/"), got["test_checkpoint"]
