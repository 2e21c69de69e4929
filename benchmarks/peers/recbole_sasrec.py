"""Peer benchmark: RecBole 1.2.1's SASRec on the same Amazon Beauty file, on the same machine.

    python benchmarks/peers/recbole_sasrec.py                 # 4 epochs on full Beauty: ~15 min of 2 cores
    python benchmarks/peers/recbole_sasrec.py --smoke-test    # first 300 users, 1 epoch: seconds (+ venv once)
    python benchmarks/peers/recbole_sasrec.py --epochs 1 --venv /tmp/rb --data PATH --output DIR

What it measures, to set beside benchmarks/sasrec_beauty.py: the seconds of each training epoch,
of each full-ranking validation (all users, whole catalogue), validation NDCG@10 / Hit@10 after
every epoch, and the wall time from the start of training to the first epoch whose validation
NDCG@10 >= 0.045 (null if no epoch run reaches it). Output: benchmarks/results/peers_recbole.json
(smoke: peers_recbole_smoke.json), whose `figures` list is what other scripts tabulate.

Protocol. Beauty.txt ("user i1 i2 ..." chronological) becomes a RecBole atomic file
<tmpdir>/beauty/beauty.inter with timestamp = position in the user's sequence. RecBole then runs
with the settings of our issue: CE over the full catalogue, max length
50, hidden 64, inner 256, 2 layers, 2 heads, dropout 0.5 (its default), batch 256, Adam lr 1e-3,
prefix augmentation (RecBole's default for sequential models), leave-one-out
({LS: valid_and_test}, order TO, full ranking, grouped by user), seed 0, CPU, torch threads 2,
OMP_WAIT_POLICY=PASSIVE (as our benchmarks set it), no filtering (the file is already 5-core), no
early stopping, no checkpoints (Trainer.fit(saved=False)). Epochs are RecBole's own
Trainer.fit; _recbole_runner.py subclasses Trainer and times _train_epoch and _valid_epoch.
One protocol difference to keep in mind: RecBole's full-sort evaluation of sequential models masks
only the padding item, not the user's earlier items (our evaluation masks seen items).

The venv. RecBole 1.2.1 pins ray<=2.6.3 and other old versions, so it gets its own venv
(default benchmarks/peers/.venv-recbole, git-ignored; reused when it already imports recbole
1.2.1): torch==2.13.0 first (the local CPU wheel; otherwise pip pulls a multi-GB CUDA build), then
only what SASRec's path imports: numpy scipy "pandas<3" tqdm colorlog==4.7.2 colorama==0.4.4 pyyaml
scikit-learn texttable psutil, then recbole==1.2.1 with --no-deps (no ray, plotly, thop,
tabulate, tensorboard). pandas<3: RecBole fills missing values with `df[col].fillna(..., inplace=True)`,
which pandas 3's copy-on-write makes a silent no-op (harmless here, Beauty has none; it warns).
pip's output goes to <venv>/pip-install.log.

Shims, set in _recbole_runner.py before recbole is imported:
  * numpy 2 aliases: np.float_, np.complex_, np.unicode_ (read by RecBole's
    Config.compatibility_settings, AttributeError otherwise) and np.float, np.int, np.bool,
    np.long, np.complex, np.object, np.str, np.unicode (used by RecBole's metrics and layers), each
    set only where numpy lacks it, to the type RecBole itself maps it to.
  * torch.utils.tensorboard: recbole.utils imports SummaryWriter at import time, which needs the
    tensorboard package; a no-op SummaryWriter stands in (nothing reads its event files).
  * No setuptools<81 pin: with the tensorboard stub nothing on this path imports pkg_resources.
  * RecBole's Config parses sys.argv as its own options: the runner clears its arguments first.
  * FutureWarnings (chained fillna in pandas 2, torch.cuda.amp.GradScaler) are silenced as noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUNNER = os.path.join(HERE, "_recbole_runner.py")
DEFAULT_VENV = os.path.join(HERE, ".venv-recbole")
# shared/ lies beside the repository (in CI too); /work/shared is where it lies on a developer's machine.
DEFAULT_DATA = next((p for p in (os.path.join(ROOT, "..", "shared", "data", "s3rec", "Beauty.txt"),
                                 "/work/shared/data/s3rec/Beauty.txt") if os.path.exists(p)),
                    "/work/shared/data/s3rec/Beauty.txt")
TARGET_NDCG = 0.045
SMOKE_USERS = 300
PIP_STEPS = [
    ["torch==2.13.0"],
    ["numpy", "scipy", "pandas<3", "tqdm", "colorlog==4.7.2", "colorama==0.4.4", "pyyaml", "scikit-learn",
     "texttable", "psutil"],
    ["--no-deps", "recbole==1.2.1"],
]
CHECK = "import recbole, torch, numpy, scipy, pandas, sklearn, colorlog, texttable, yaml, tqdm; " \
        "assert recbole.__version__ == '1.2.1' and int(pandas.__version__.split('.')[0]) < 3"


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def ensure_venv(venv: str) -> None:
    """Reuse the venv when it imports recbole 1.2.1; otherwise create or complete it."""
    py = venv_python(venv)
    if os.path.exists(py) and subprocess.run([py, "-c", CHECK], capture_output=True).returncode == 0:
        return
    t = time.perf_counter()
    print(f"recbole_sasrec: installing RecBole 1.2.1 into {venv} (log: {venv}/pip-install.log)", flush=True)
    try:
        if not os.path.exists(py):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
        with open(os.path.join(venv, "pip-install.log"), "w") as log:
            for step in PIP_STEPS:
                subprocess.run([py, "-m", "pip", "install", "-q", *step], check=True, stdout=log, stderr=log)
        subprocess.run([py, "-c", CHECK], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as e:
        what = f"`{' '.join(e.cmd[1:])}` failed" if isinstance(e, subprocess.CalledProcessError) else str(e)
        log = os.path.join(venv, "pip-install.log")
        print(f"recbole_sasrec: could not set up the RecBole venv at {venv}: {what}"
              + (f" (see {log})" if os.path.exists(log) else ""), file=sys.stderr)
        sys.exit(1)
    print(f"recbole_sasrec: venv ready in {time.perf_counter() - t:.0f}s", flush=True)


def write_atomic(data: str, out_dir: str, max_users: int | None) -> dict:
    """Beauty.txt -> <out_dir>/beauty/beauty.inter; timestamp = position, so order TO keeps each sequence."""
    os.makedirs(os.path.join(out_dir, "beauty"))
    users, items, inters = 0, set(), 0
    with open(data) as src, open(os.path.join(out_dir, "beauty", "beauty.inter"), "w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            if max_users is not None and users >= max_users:
                break
            user, *seq = line.split()
            if not seq:
                continue
            users += 1
            items.update(seq)
            inters += len(seq)
            dst.writelines(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(seq))
    return {"users": users, "items": len(items), "interactions": inters}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--venv", default=DEFAULT_VENV)
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--smoke-test", action="store_true",
                   help=f"first {SMOKE_USERS} users, 1 epoch, eval batch 256")
    args = p.parse_args()
    if not os.path.isfile(args.data):
        print(f"recbole_sasrec: data file not found: {args.data}", file=sys.stderr)
        return 2
    epochs = 1 if args.smoke_test else args.epochs
    eval_batch = 256 if args.smoke_test else 2048
    wall_start = time.perf_counter()
    load_start = os.getloadavg()

    ensure_venv(os.path.abspath(args.venv))
    tmp = tempfile.mkdtemp(prefix="recbole_beauty_")
    try:
        stats = write_atomic(args.data, tmp, SMOKE_USERS if args.smoke_test else None)
        result_path = os.path.join(tmp, "result.json")
        env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        # cwd=tmp: RecBole writes ./log/ and ./log_tensorboard/ into the working directory.
        rc = subprocess.run([venv_python(os.path.abspath(args.venv)), RUNNER, "--data-dir", tmp,
                             "--epochs", str(epochs), "--eval-batch-size", str(eval_batch), "--threads", "2",
                             "--target-ndcg", str(TARGET_NDCG), "--result", result_path],
                            cwd=tmp, env=env).returncode
        if rc != 0:
            print(f"recbole_sasrec: the RecBole run failed (exit {rc})", file=sys.stderr)
            return 1
        with open(result_path) as f:
            run = json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_epoch = [{k: e[k] for k in ("epoch", "train_seconds", "eval_seconds", "val_ndcg_10", "val_hit_10",
                                    "train_loss_mean")} for e in run["epochs"]]
    med_train = statistics.median(e["train_seconds"] for e in per_epoch)
    med_eval = statistics.median(e["eval_seconds"] for e in per_epoch)
    out = {
        "peer": "RecBole SASRec",
        "recbole": run["recbole"],
        "torch": run["torch"],
        "numpy": run["numpy"],
        "threads": run["threads"],
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": env["OMP_WAIT_POLICY"],
        "smoke_test": args.smoke_test,
        "dataset": (f"{os.path.basename(args.data)}"
                    f"{f' (first {SMOKE_USERS} users)' if args.smoke_test else ''}: {stats['users']:,} users, "
                    f"{stats['items']:,} items, {stats['interactions']:,} interactions"),
        "data_path": os.path.abspath(args.data),
        "recbole_dataset": run["recbole_dataset"],
        "protocol": "leave-one-out (RecBole LS valid_and_test, order TO), full-catalogue ranking of all users; "
                    "RecBole masks only the padding item, not the user's earlier items",
        "config": run["config"],
        "model_defaults_used": run["model_defaults_used"],
        "parameters": run["parameters"],
        "epochs_run": len(per_epoch),
        "per_epoch": per_epoch,
        "median_train_epoch_seconds": med_train,
        "median_eval_seconds": med_eval,
        "target_val_ndcg_10": TARGET_NDCG,
        "seconds_to_ndcg_0045": run["seconds_to_target"],
        "setup_seconds": run["setup_seconds"],
        "train_wall_seconds": run["train_wall_seconds"],
        "total_wall_seconds": time.perf_counter() - wall_start,
        "loadavg_at_start": list(load_start),
        "loadavg_at_end": list(os.getloadavg()),
        "figures": [
            {"name": "RecBole SASRec CE epoch (s)", "value": med_train, "unit": "s"},
            {"name": "RecBole full-ranking eval, all users (s)", "value": med_eval, "unit": "s"},
            {"name": "RecBole time to val NDCG@10 >= 0.045 (s)", "value": run["seconds_to_target"], "unit": "s"},
        ],
    }
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "peers_recbole_smoke.json" if args.smoke_test else "peers_recbole.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"recbole_sasrec: median epoch {med_train:.1f}s, eval {med_eval:.1f}s, "
          f"best val NDCG@10 {max(e['val_ndcg_10'] for e in per_epoch):.4f} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
