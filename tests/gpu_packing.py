"""Run by tests/tuner_tests/test_gpu_packing.py in its own process: sweeps on a private local Ray that declares 2
logical GPUs on this CPU-only machine. Prints one JSON line per GPU fraction: the most trials MLflow
saw running at once, and the device each trial reported (Ray sets CUDA_VISIBLE_DEVICES per trial)."""

import glob
import json
import os
import signal
import sys
import tempfile

import pandas as pd
import ray
import yaml
from mlflow.tracking import MlflowClient

from tuner import cluster
from tuner import spec as specmod
from tuner import sweep


def most_at_once(runs) -> int:
    """Largest number of MLflow child runs open at the same instant (ms timestamps; an end sorts first)."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def devices(sweep_dir: str) -> list[str]:
    """The `device` each trial reported in its first result (Ray's result.json per trial)."""
    out = []
    for path in sorted(glob.glob(os.path.join(sweep_dir, "ray", "*", "result.json"))):
        with open(path) as fh:
            out.append(json.loads(fh.readline()).get("device", ""))
    return out


def sweep_at(fraction: float, out: str) -> dict:
    body = {"name": f"gpu{int(fraction * 100)}", "model": "bpr_mf",
            "data": {"synthetic": {"n_users": 400, "n_items": 120, "mean_length": 10, "seed": 3}},
            # 30 epochs: with 4, a trial ended before the last one started (7 of 8 at once, CI at load ~4)
            "fixed": {"epochs": 30, "batch_size": 64, "loss": "bpr"},
            "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
            "search": {"samples": 8, "concurrency": 8, "seed": 0}, "scheduler": {"type": "fifo"},
            "diagnose": {"enabled": False}, "resources": {"cpu": 0.25, "gpu": fraction}}
    path = os.path.join(out, f"{body['name']}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(body, fh)
    res = sweep.run(specmod.load(path), output=os.path.join(out, "runs"), verbose=0)
    client = MlflowClient(res.tracking_uri)
    kids = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    table = pd.read_csv(os.path.join(res.sweep_dir, "trials.csv"))
    return {"fraction": fraction, "trials": len(kids), "most_at_once": most_at_once(kids),
            "statuses": sorted({r.data.tags.get("status") for r in kids}), "devices": devices(res.sweep_dir),
            "csv_devices": sorted(table["device"]) if "device" in table else [],
            "mlflow_devices": sorted(r.data.tags.get("device", "") for r in kids)}


signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
cluster.start(None, 0, num_cpus=8, num_gpus=2, object_store_memory=150 * 1024**2)
try:
    tmp = tempfile.mkdtemp()
    for fraction in [float(f) for f in sys.argv[1:]] or [0.5, 0.25]:
        print(json.dumps(sweep_at(fraction, tmp)), flush=True)
finally:
    ray.shutdown()
