"""Issue 3's real-data check: the default bpr.yaml sweep, unchanged but for its data, on Amazon Beauty.

    python benchmarks/bpr_beauty.py               # full: 16 trials on ../shared/data/s3rec/Beauty.txt
    python benchmarks/bpr_beauty.py --smoke-test  # seconds: 2 trials x 2 epochs on a 2,000-user slice

Prints and writes benchmarks/results/bpr_beauty.{json,md}: wall time, trial statuses, the best
config, its test HR@10/NDCG@10 (computed after the sweep) beside the popularity baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BEAUTY = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s3rec", "Beauty.txt"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=BEAUTY)
    ap.add_argument("--spec", default=os.path.join(ROOT, "search_spaces", "bpr.yaml"))
    ap.add_argument("--samples", type=int, default=None, help="default: the spec's")
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if not os.path.isfile(args.data):
        print(f"benchmarks/bpr_beauty.py: data file not found: {args.data}", file=sys.stderr)
        return 2

    from tuner import spec as specmod
    from tuner import sweep

    data_path = args.data
    overrides = {"data.source": "file", "data.path": data_path, "tracking.experiment": "bpr-beauty"}
    if args.samples:
        overrides["search.samples"] = args.samples
    if args.smoke_test:
        lines = open(args.data).read().splitlines()[:2000]
        tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        tmp.write("\n".join(lines) + "\n")
        tmp.close()
        overrides.update({"data.path": tmp.name, "search.samples": 2, "fixed.epochs": 2,
                          "scheduler.grace_period": 1})
    spec = specmod.load(args.spec, overrides)
    out_dir = tempfile.mkdtemp() if args.smoke_test else os.path.join(ROOT, "runs")
    t0 = time.time()
    res = sweep.run(spec, output=out_dir, verbose=0)
    wall = time.time() - t0
    print(sweep.report(spec, res))

    record = {
        "what": "search_spaces/bpr.yaml sweep with data.path = Beauty.txt (S3-Rec 5-core)",
        "data": os.path.relpath(data_path, ROOT) if not args.smoke_test else "Beauty.txt[:2000 users]",
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "samples": spec.search.samples, "concurrency": spec.search.concurrency,
        "wall_seconds_incl_ray_init": round(wall, 1),
        "status_counts": res.table["status"].value_counts().to_dict(),
        "best_config": res.best_config, "best_val": res.best_val,
        "test": res.test, "popularity_test": res.baseline["test"],
    }
    if args.smoke_test:
        return 0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bpr_beauty.json"), "w") as fh:
        json.dump(record, fh, indent=2, default=str)
    t, p = res.test, res.baseline["test"]
    md = [
        "# bpr.yaml sweep on Amazon Beauty (S3-Rec 5-core), full ranking, leave-one-out",
        "",
        f"Command: `python benchmarks/bpr_beauty.py` ({record['machine']}; {spec.search.samples} trials, "
        f"concurrency {spec.search.concurrency}). Wall time incl. Ray start: {wall:.0f} s.",
        "",
        "| | HR@10 | NDCG@10 | HR@20 | NDCG@20 |",
        "|---|---|---|---|---|",
        f"| best trial (test) | {t['hr_10']:.4f} | {t['ndcg_10']:.4f} | {t['hr_20']:.4f} | {t['ndcg_20']:.4f} |",
        f"| popularity (test) | {p['hr_10']:.4f} | {p['ndcg_10']:.4f} | {p['hr_20']:.4f} | {p['ndcg_20']:.4f} |",
        "",
        f"Trials: {record['status_counts']}. Best config: `{json.dumps(res.best_config, default=str)}`",
    ]
    with open(os.path.join(args.out, "bpr_beauty.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/bpr_beauty.py"))
