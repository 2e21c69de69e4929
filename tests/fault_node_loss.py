"""Run by tests/tuner_tests/test_faults.py in its own process: a sweep on a 2-node local Ray cluster whose
worker node is removed while trials run. Prints one JSON line with what happened."""

import json
import os
import signal
import sys
import tempfile
import threading
import time

import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

import ray
from tuner import spec as specmod
from tuner import sweep

out = tempfile.mkdtemp()
body = {
    "name": "nodeloss", "model": "bpr_mf",
    "data": {"synthetic": {"n_users": 1500, "n_items": 300, "mean_length": 12, "seed": 2}},
    "fixed": {"epochs": 30, "loss": "bpr", "batch_size": 128},
    "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
    "search": {"samples": 2, "concurrency": 2, "seed": 0},
    "scheduler": {"type": "fifo"},
    "run": {"max_failures": 3},
}
path = os.path.join(out, "nodeloss.yaml")
with open(path, "w") as fh:
    yaml.safe_dump(body, fh)
spec = specmod.load(path)

removed = {}
done = threading.Event()  # set when the sweep has returned


def main():
    def kill_worker_mid_sweep():
        """Remove the worker node once both trials have reported 2 epochs (the event, polled in
        MLflow); if that never happens while the sweep runs, leave it and say so in the result."""
        client = None
        deadline = time.monotonic() + 300  # a bound against a hang only: the loop ends on the event
        while time.monotonic() < deadline and not done.is_set():
            try:
                client = client or MlflowClient(f"sqlite:///{os.path.join(out, 'runs', 'mlflow.db')}")
                exps = client.search_experiments()
                runs = client.search_runs([exps[0].experiment_id], "tags.`tuner.trial_id` != ''") if exps else []
                epochs = sorted(int(float(r.data.tags.get("epochs_run", 0))) for r in runs)
                if len(runs) == 2 and epochs[0] >= 2:
                    cluster.remove_node(worker)
                    removed["epochs"] = epochs
                    return
            except Exception:  # noqa: BLE001 - the database is still being created
                pass
            done.wait(0.5)  # poll interval; returns at once when the sweep has ended
        removed["missed"] = "the sweep ended first" if done.is_set() else "no 2 epochs from both trials in 300 s"

    killer = threading.Thread(target=kill_worker_mid_sweep, daemon=True)
    killer.start()
    try:
        res = sweep.run(spec, output=os.path.join(out, "runs"), verbose=0)
    finally:
        done.set()
        killer.join()  # no remove_node racing the cluster's shutdown below
    client = MlflowClient(res.tracking_uri)
    kids = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    steps = {r.data.tags["tuner.trial_number"]: [m.step for m in client.get_metric_history(r.info.run_id, "val_ndcg_10")]
             for r in kids}
    print(json.dumps({
        "removed": removed, "children": len(kids), "statuses": sorted(r.data.tags["status"] for r in kids),
        "run_status": sorted(r.info.status for r in kids), "restarts": res.table["restarts"].tolist(),
        "steps": steps,
    }))


signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    main()
finally:  # also when the test kills us at its timeout (SIGTERM): no cluster outlives this script
    ray.shutdown()
    cluster.shutdown()
