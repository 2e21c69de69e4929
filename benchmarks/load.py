"""Load: a 200-trial sweep of a tiny model on this machine, concurrency 2.

    python benchmarks/load.py                # 200 trials x 2 epochs
    python benchmarks/load.py --smoke-test   # 10 trials

Reports wall time, Ray overhead per trial (wall time minus the trials' own training+eval time,
divided by trials, at the given concurrency), and memory: the driver's RSS sampled after every
trial (flat = no per-trial leak in the driver) and the peak RSS of the trial workers.
Writes benchmarks/results/load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--smoke-test", action="store_true")
    args = ap.parse_args(argv)
    n = 10 if args.smoke_test else args.trials

    import yaml
    from tuner import spec as specmod
    from tuner import cluster, sweep

    out = tempfile.mkdtemp()
    body = {
        "name": "load", "model": "bpr_mf",
        "data": {"synthetic": {"n_users": 200, "n_items": 100, "mean_length": 10, "seed": 0}},
        "fixed": {"epochs": 2, "dim": 8},
        "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}},
        "search": {"samples": n, "concurrency": 2, "seed": 0},
        "scheduler": {"type": "fifo"},
        "run": {"checkpoints_to_keep": 1},
    }
    path = os.path.join(out, "load.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(body, fh)
    spec = specmod.load(path)

    samples: list[tuple[float, float]] = []  # (seconds since start, driver RSS MB)
    stop = threading.Event()
    t0 = time.time()

    def sample():
        while not stop.is_set():
            samples.append((time.time() - t0, rss_mb()))
            stop.wait(1.0)

    cluster.start(None, 0)
    t_ray = time.time() - t0
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t1 = time.time()
    res = sweep.run(spec, output=os.path.join(out, "runs"), verbose=0)
    wall = time.time() - t1
    stop.set()
    th.join()

    import pandas as pd

    trial_seconds, worker_peak = 0.0, 0.0
    for f in os.listdir(os.path.join(res.sweep_dir, "ray")):
        prog = os.path.join(res.sweep_dir, "ray", f, "progress.csv")
        if os.path.exists(prog):
            df = pd.read_csv(prog)
            trial_seconds += float((df["epoch_seconds"] + df["eval_seconds"]).sum())
            worker_peak = max(worker_peak, float(df["peak_rss_mb"].max()))
    overhead = (wall - trial_seconds / 2) / n  # concurrency 2: two trials' work overlaps
    rss = [r for _, r in samples]
    q = max(1, len(rss) // 4)
    record = {
        "trials": n, "concurrency": 2, "cores": os.cpu_count(), "ray_init_seconds": round(t_ray, 1),
        "wall_seconds": round(wall, 1), "trials_per_minute": round(60 * n / wall, 1),
        "trial_compute_seconds": round(trial_seconds, 1),
        "ray_overhead_seconds_per_trial": round(overhead, 2),
        "driver_rss_mb_first_quarter": round(sum(rss[:q]) / q, 1),
        "driver_rss_mb_last_quarter": round(sum(rss[-q:]) / q, 1),
        "driver_rss_mb_peak": round(max(rss), 1),
        "worker_peak_rss_mb": round(worker_peak, 1),
        "statuses": res.table["status"].value_counts().to_dict(),
    }
    print(json.dumps(record, indent=2))
    if not args.smoke_test:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "load.json"), "w") as fh:
            json.dump(record, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
