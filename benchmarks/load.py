"""Scale: a many-trial sweep of a tiny model, concurrency 2, beside Ray's bare Tuner on the same work.

    python benchmarks/load.py                 # 1,000 trials x 2 epochs, each engine in its own process
    python benchmarks/load.py --trials 200    # shorter
    python benchmarks/load.py --smoke-test    # 6 trials, nothing written

Two engines run the same trainable (tuner/trainable.py: BPR-MF, dim 8, 200 users x 100 items, 2
epochs) on the same private local Ray, one after the other, each in a fresh Python process:
- `bare`: `ray.tune.Tuner` with Tune's random search and no callbacks, stopper or searcher of ours,
  with the Ray settings tuner uses (reuse_actors, one checkpoint kept): what Ray itself costs;
- `tuner`: `tuner.sweep.run` (Optuna TPE, the MLflow and progress callbacks, the pathology stopper,
  trials.csv, summary, test metrics of the best trial).
A thread in each driver samples its resident memory (VmRSS) and the number of trials started (Tune's
trial folders) every 0.5 s, so memory is read against trials, not time. Reported per engine:
trials per minute, the driver's RSS after the first 50 trials, its growth until the last trial has
started (the sweep proper) and until the end (which adds reading every trial's results back, the
table, the report and test metrics), per trial after those 50, and the peak. Both engines run with
tuner's malloc setting (2 arenas, tuner/cluster.py), as both start Ray through it. Writes benchmarks/results/load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

WARMUP_TRIALS = 50  # the issue's reference point: RSS after the first 50 trials
# checkpoints kept per trial (--keep): Ray forces a full experiment-state snapshot whenever a trial
# has saved this many checkpoints since the last one, so 1 means one snapshot per epoch of each trial
KEEP = int(os.environ.get("LOAD_KEEP", "1"))
BODY = {
    "name": "load", "model": "bpr_mf", "metric": {"name": "val_ndcg_10", "mode": "max"},
    "data": {"synthetic": {"n_users": 200, "n_items": 100, "mean_length": 10, "seed": 0}},
    "fixed": {"epochs": 2, "dim": 8},
    "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}},
    "search": {"concurrency": 2, "seed": 0},
    "scheduler": {"type": "fifo"},
}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """(seconds, RSS MB, trials started) every 0.5 s; trials started = Tune's trial folders."""

    def __init__(self, exp_dir_of):
        super().__init__(daemon=True)
        self.exp_dir_of, self.rows, self.done, self.t0 = exp_dir_of, [], threading.Event(), time.time()

    def started(self) -> int:
        d = self.exp_dir_of()
        if not d or not os.path.isdir(d):
            return 0
        return sum(1 for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))

    def run(self) -> None:
        while not self.done.is_set():
            self.rows.append((time.time() - self.t0, rss_mb(), self.started()))
            self.done.wait(0.5)


def spec_for(n: int, out: str):
    import yaml

    from tuner import spec as specmod

    path = os.path.join(out, "load.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({**BODY, "search": {**BODY["search"], "samples": n}, "run": {"checkpoints_to_keep": KEEP}}, fh)
    return specmod.load(path)


def engine_bare(n: int, out: str) -> Sampler:
    from ray import tune

    from tuner.trainable import train

    spec = spec_for(n, out)
    data = spec.model_entry().dataset(spec)
    storage = os.path.join(out, "bare")
    sampler = Sampler(lambda: os.path.join(storage, "bare"))
    sampler.start()
    tune.Tuner(
        tune.with_resources(tune.with_parameters(train, data=data, model="bpr_mf", ks=(10, 20)), {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-3, 1e-1), "epochs": 2, "dim": 8},
        # reuse_actors as tuner sets it: a Ray setting, not ours (8x less overhead on tiny trials)
        tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=2, metric="val_ndcg_10", mode="max",
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="bare", storage_path=storage, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP)),
    ).fit()
    return sampler


def engine_tuner(n: int, out: str) -> Sampler:
    from tuner import sweep

    spec = spec_for(n, out)
    runs = os.path.join(out, "runs")

    def exp_dir():  # <runs>/load-<stamp>/ray once the sweep has made it
        sweeps = [d for d in os.listdir(runs) if d.startswith("load-")] if os.path.isdir(runs) else []
        return os.path.join(runs, sweeps[0], "ray") if sweeps else None

    sampler = Sampler(exp_dir)
    sampler.start()
    sweep.run(spec, output=runs, verbose=0)
    return sampler


def measure(engine: str, n: int) -> dict:
    """Runs in the engine's own process: one engine, one Ray, then the figures."""
    from tuner import cluster

    out = tempfile.mkdtemp(prefix=f"load-{engine}-")
    cluster.start(None, 0)
    t0 = time.time()
    sampler = {"bare": engine_bare, "tuner": engine_tuner}[engine](n, out)
    wall = time.time() - t0
    sampler.done.set()
    sampler.join()
    rows = sampler.rows
    warm = next((r for r in rows if r[2] >= WARMUP_TRIALS + 2), rows[len(rows) // 20])  # +2: the two running
    end = rows[-1]
    started = next((r for r in rows if r[2] >= n), end)  # the last trial under way: the sweep proper
    per_trial = (end[1] - warm[1]) / max(n - WARMUP_TRIALS, 1)
    return {
        "engine": engine, "trials": n, "checkpoints_kept": KEEP, "concurrency": 2, "cores": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
        "wall_seconds": round(wall, 1), "trials_per_minute": round(60 * n / wall, 1),
        "driver_rss_mb_after_first_50": round(warm[1], 1), "driver_rss_mb_end": round(end[1], 1),
        "driver_rss_mb_growth_after_50": round(end[1] - warm[1], 1),
        # up to the last trial's start, before results are read back, the table and the report
        "driver_rss_mb_when_all_started": round(started[1], 1),
        "driver_rss_mb_growth_during_sweep": round(started[1] - warm[1], 1),
        "driver_rss_mb_per_trial_during_sweep": round((started[1] - warm[1]) / max(started[2] - warm[2], 1), 3),
        "driver_rss_mb_per_trial_after_50": round(per_trial, 3),
        "driver_rss_mb_peak": round(max(r[1] for r in rows), 1),
        "rss_by_trials": [(r[2], round(r[1], 1)) for r in rows[:: max(1, len(rows) // 40)]],
    }


def markdown(records: list[dict]) -> str:
    lines = ["| engine | trials | trials/min | RSS after 50 (MB) | growth while trials start (MB, MB/trial) "
             "| RSS end (MB) | growth to the end (MB, MB/trial) | peak (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['engine']} | {r['trials']} | {r['trials_per_minute']} | {r['driver_rss_mb_after_first_50']} | "
                     f"{r['driver_rss_mb_growth_during_sweep']}, {r['driver_rss_mb_per_trial_during_sweep']} | "
                     f"{r['driver_rss_mb_end']} | {r['driver_rss_mb_growth_after_50']}, "
                     f"{r['driver_rss_mb_per_trial_after_50']} | {r['driver_rss_mb_peak']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--engines", default="bare,tuner", help="comma-separated: bare, tuner")
    ap.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine in this process
    ap.add_argument("--keep", type=int, default=KEEP, help="checkpoints kept per trial (run.checkpoints_to_keep)")
    ap.add_argument("--smoke-test", action="store_true")
    args = ap.parse_args(argv)
    os.environ["LOAD_KEEP"] = str(args.keep)  # the engines' processes read it
    n = 6 if args.smoke_test else args.trials
    if args.engine:
        print(json.dumps(measure(args.engine, n)))
        return 0
    records = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--engine", engine, "--trials", str(n)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=3600)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
        if p.returncode:
            print(f"load.py: engine {engine} exited {p.returncode}", file=sys.stderr)
            return 1
        records.append(json.loads(out.strip().splitlines()[-1]))
        print(markdown(records[-1:]), end="", flush=True)
    if not args.smoke_test:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "load.json"), "w") as fh:
            json.dump(records, fh, indent=2)
        with open(os.path.join(HERE, "results", "load.md"), "w") as fh:
            fh.write(f"# Scale: {n} tiny trials, concurrency 2, {os.cpu_count()} cores, {args.keep} checkpoint(s) "
                     "kept per trial\n\n" + markdown(records))
    return 0


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/load.py"))
