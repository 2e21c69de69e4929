"""Run by tests/tuner_tests/test_faults.py in its own process: a sweep on a 2-node local Ray cluster whose
worker node is removed while trials run, with run.storage in a bucket on moto's S3 server (loopback).
Each node has its own temp folder, so a trial restarted on the head can only resume from the bucket.
Prints one JSON line with what happened."""

import json
import os
import signal
import sys
import tempfile
import threading
import time

import pyarrow.fs
import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

import ray
import services
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
# short: Ray's unix socket paths under a temp folder must stay under 108 characters
node_tmp = {"head": tempfile.mkdtemp(prefix="h", dir="/tmp"), "worker": tempfile.mkdtemp(prefix="w", dir="/tmp")}

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
        state = res.extra["test_checkpoint"]["path"]
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
        "steps": steps, "test_checkpoint": state, "in_bucket": in_bucket(res.sweep_dir),
        "local_checkpoints": local_checkpoints(),
    }))


def in_bucket(sweep_dir: str) -> dict[str, int]:
    """trial folder -> checkpoints holding a state.pt, listed in the bucket."""
    fs, root = pyarrow.fs.FileSystem.from_uri(storage_uri)
    found: dict[str, int] = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{os.path.basename(sweep_dir)}", recursive=True)):
        if info.base_name == "state.pt":
            trial = info.path.split("/")[-3]
            found[trial] = found.get(trial, 0) + 1
    return found


def local_checkpoints() -> list[str]:
    """Every state.pt on this machine's disks that the sweep could have used: none, with bucket storage."""
    return [os.path.join(d, f) for top in (out, *node_tmp.values()) for d, _, files in os.walk(top)
            for f in files if f == "state.pt"]


signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
with services.s3_server(out) as s3:  # ended in its own finally, after the cluster's below
    os.environ.update({k: v for k, v in s3.env().items() if k.startswith("AWS_") and k != "AWS_ENDPOINT_URL"})
    s3.make_bucket("ckpts")
    storage_uri = f"s3://ckpts/tuner?endpoint_override={s3.endpoint.removeprefix('http://')}&scheme=http"
    body["run"]["storage"] = storage_uri
    with open(path, "w") as fh:
        yaml.safe_dump(body, fh)
    spec = specmod.load(path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "temp_dir": node_tmp["head"]})
    try:
        worker = cluster.add_node(num_cpus=1, temp_dir=node_tmp["worker"])
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        main()
    finally:  # also when the test kills us at its timeout (SIGTERM): no cluster outlives this script
        ray.shutdown()
        cluster.shutdown()
