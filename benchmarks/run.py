"""Fast trials: every speed and memory figure of the project beside its target, on this machine.

    python benchmarks/run.py                    # every section on Amazon Beauty (~9 min on 2 cores)
    python benchmarks/run.py --only eval,bpr    # some sections: ttq, eval, bpr, overhead, memory
    python benchmarks/run.py --table            # print the table from stored results; run nothing
    python benchmarks/run.py --smoke-test       # seconds: tiny synthetic data, every section

Sections (torch uses every core unless Ray gives a trial fewer):
- ttq:      `tuner run search_spaces/sasrec_beauty.yaml` (one fixed SASRec, full CE): seconds from after
            ray.init to the driver receiving the first epoch with validation NDCG@10 >= 0.045
            (MLflow's timestamps of the trial's metrics; the sweep itself is unchanged).
- eval:     full-ranking evaluation of all users against all items, seen items masked.
- bpr:      BPR-MF epochs on Beauty: sampled (user, positive, negative) triples per second.
- overhead: 8 BPR-MF trials x 5 epochs through `tuner run` (ray.init excluded; concurrency 1 with
            2 CPUs per trial, and concurrency 2 with 1 CPU each) vs the same 8 configs trained
            one after another by trainables.loop.fit in this process.
- memory:   peak RSS of a fresh process training each model's default config for one epoch and
            evaluating it, and SASRec full CE on BERT4Rec's Beauty (54,542 items).
The search-efficiency and RecBole rows come from benchmarks/search_efficiency.py and
benchmarks/peers/recbole_sasrec.py (run separately: ~30 and ~15 minutes), when their results exist.
Results: benchmarks/results/fast_trials.json (each section keeps its last run) and fast_trials.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
BEAUTY = os.path.join(SHARED, "s3rec", "Beauty.txt")
BEAUTY_ATTRS = os.path.join(SHARED, "s3rec", "Beauty_item2attributes.json")
BERT4REC_BEAUTY = os.path.join(SHARED, "beauty.txt")
RESULTS = os.path.join(HERE, "results")
SECTIONS = ("ttq", "eval", "bpr", "overhead", "memory")

TTQ_SPEC = os.path.join(ROOT, "search_spaces", "sasrec_beauty.yaml")  # one fixed SASRec, full CE
TTQ_TARGET = 0.045  # validation NDCG@10
RECBOLE = {"epoch": 170.0, "eval": 16.0, "ttq": 745.0}  # the issue's RecBole 1.2.1 figures, this machine class


def figure(section, name, value, unit, target=None, met=None, note=""):
    return {"section": section, "name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def write_spec(folder: str, body: dict) -> str:
    import yaml

    path = os.path.join(folder, f"{body['name']}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(body, fh, sort_keys=False)
    return path


def data_block(path: str) -> dict:
    return {"source": "file", "path": path}


def smoke_file(folder: str, src: str, lines: int = 300) -> str:
    """The first `lines` lines of a data file (users of a sequences file): real structure, seconds of work."""
    path = os.path.join(folder, "slice.txt")
    with open(src) as fh, open(path, "w") as out:
        out.writelines(line for _, line in zip(range(lines), fh))
    return path


# --- ttq --------------------------------------------------------------------------------------

def child_metrics(uri: str, parent: str, key: str) -> list:
    """[(timestamp ms, step, value)] of `key` in the sweep's (only) trial run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(parent)
    kids = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return sorted((m.timestamp, m.step, m.value) for m in client.get_metric_history(kids[0].info.run_id, key))


def run_ttq(args, tmp: str) -> list:
    from tuner import spec as specmod
    from tuner import cluster, sweep

    epochs = 2 if args.smoke_test else args.ttq_epochs
    path = smoke_file(tmp, args.data) if args.smoke_test else args.data
    spec = specmod.load(TTQ_SPEC, {"data.path": os.path.abspath(path), "fixed.epochs": epochs,
                                   "resources.cpu": os.cpu_count()})
    cluster.start(None, 0)
    t0 = time.time()
    res = sweep.run(spec, output=os.path.join(tmp, "runs"), verbose=0)
    wall = time.time() - t0
    ndcg = child_metrics(res.tracking_uri, res.parent_run_id, "val_ndcg_10")
    hit = next(((ts, step) for ts, step, v in ndcg if v >= TTQ_TARGET), None)
    ttq = hit[0] / 1000 - t0 if hit else None
    epoch_s = [v for *_, v in child_metrics(res.tracking_uri, res.parent_run_id, "epoch_seconds")]
    eval_s = [v for *_, v in child_metrics(res.tracking_uri, res.parent_run_id, "eval_seconds")]
    cfg = ", ".join(f"{k}={v}" for k, v in spec.fixed.items() if k != "epochs")
    note = (f"reached at epoch {hit[1]}" if hit else f"not reached in {epochs} epochs (best {max(v for *_, v in ndcg):.4f})")
    return [
        figure("ttq", "Time to quality: `tuner run` SASRec to val NDCG@10 >= 0.045 (s)", ttq, "s",
               "<= 190 (RecBole ~745)", ttq is not None and ttq <= 190,
               f"{note}; after ray.init; {cfg}; sweep wall {wall:.0f}s for {epochs} epochs, "
               f"test NDCG@10 {res.test['ndcg_10']:.4f}"),
        figure("ttq", "SASRec full-CE training epoch inside the trial (median, s)", statistics.median(epoch_s), "s",
               "(RecBole ~170)", None, f"{os.cpu_count()} CPUs given to the trial"),
        figure("ttq", "SASRec validation eval inside the trial (median, s)", statistics.median(eval_s), "s",
               None, None, "every epoch, all users x all items"),
    ]


# --- eval -------------------------------------------------------------------------------------

def recipe_for(model: str, config: dict, data, seed_epochs: int = 0):
    import torch

    from trainables import MODELS

    entry = MODELS[model]
    recipe = entry.recipe(entry.make_config(config), data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for e in range(seed_epochs):
        recipe.train_epoch(e + 1, gen)
    return recipe


def timed(fn, repeats: int) -> list:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_eval(args, tmp: str) -> list:
    from trainables.loop import evaluate
    from trainables import data as datamod
    from tuner import spec as specmod

    data = datamod.load(smoke_file(tmp, args.data) if args.smoke_test else args.data)
    reps = 1 if args.smoke_test else 5
    out = []
    for model, config in (("sasrec", specmod.load(TTQ_SPEC).fixed), ("bpr_mf", {})):
        recipe = recipe_for(model, config, data, seed_epochs=1)  # a trained model: fewer exact ties
        evaluate(recipe, "valid")  # warm-up: caches the evaluation sequences
        secs = timed(lambda: evaluate(recipe, "valid"), reps)
        out.append(figure("eval", f"Full-ranking eval, {model}, all {data.n_users:,} users x {data.n_items:,} items (s)",
                          statistics.median(secs), "s", "<= 4 (RecBole ~16)", statistics.median(secs) <= 4,
                          f"median of {reps}: {', '.join(f'{s:.2f}' for s in secs)}; seen items masked"))
    return out


# --- bpr --------------------------------------------------------------------------------------

def run_bpr(args, tmp: str) -> list:
    from trainables import data as datamod

    data = datamod.load(smoke_file(tmp, args.data) if args.smoke_test else args.data)
    reps = 1 if args.smoke_test else 5
    out = []
    cases = (("adam", 1024, ""), ("adam", 8192, ""), ("sparse_adam", 1024, "C"), ("sparse_adam", 8192, "C"),
             ("sparse_adam", 1024, "torch"))
    for optimizer, batch, path in cases:
        recipe = recipe_for("bpr_mf", {"batch_size": batch, "optimizer": optimizer}, data)
        if path == "torch":
            recipe.fused = None  # LazyAdam.step on sparse gradients: what the C kernel replaces
        elif path == "C" and recipe.fused is None:
            path = "torch: the C kernel did not build here"
        gen = __import__("torch").Generator().manual_seed(0)
        secs = timed(lambda: recipe.train_epoch(1, gen), reps)
        rate = data.n_train * recipe.cfg.num_negatives / statistics.median(secs)
        default = batch == 1024 and optimizer == "adam"
        limit = ("every step updates the whole 2.2M-parameter tables (dense Adam reads and writes value, "
                 "gradient and both moments of every row: ~60 MB of memory traffic a step), so triples/s "
                 "grows with the batch" if optimizer == "adam" else
                 "two C calls a step (trainables/kernels.py) around the loss and its autograd on [B, 2] "
                 "scores; the kernel's time is random-row memory access to value and moments" if path == "C" else
                 "lazy Adam in torch ops: ~60 small ops a step (unique, index_add, gathers, scatters), "
                 "dispatch overhead dominates at batch 1024")
        label = f"BPR-MF epoch, {optimizer}{f' ({path})' if path else ''}, batch {batch}{' (default)' if default else ''}"
        out.append(figure("bpr", f"{label}: triples/s", rate, "1/s", "> 1,000,000", rate > 1e6,
                          f"dim 64, 1 negative; {data.n_train:,} triples/epoch, epoch "
                          f"{statistics.median(secs):.3f}s (median of {reps}), "
                          f"{1000 * statistics.median(secs) / math.ceil(data.n_train / batch):.2f} ms/step; "
                          f"limit: {limit}"))
    return out


# --- overhead ---------------------------------------------------------------------------------

def overhead_spec(tmp: str, path: str, concurrency: int, epochs: int) -> dict:
    return {
        "name": f"overhead-c{concurrency}", "model": "bpr_mf", "data": data_block(path),
        "fixed": {"epochs": epochs},
        "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
                  "dim": {"type": "categorical", "choices": [32, 64]}},
        "search": {"samples": 8, "concurrency": concurrency, "seed": 0, "algo": "random"},
        "scheduler": {"type": "fifo"}, "diagnose": {"enabled": False},
        "resources": {"cpu": os.cpu_count() // concurrency or 1},
    }


def plain(job_path: str) -> None:
    """The overhead baseline: load the data, fit each config with validation every epoch; prints seconds."""
    import torch

    from trainables import MODELS
    from trainables.loop import fit
    from trainables import data as datamod

    with open(job_path) as fh:
        job = json.load(fh)
    torch.set_num_threads(os.cpu_count())
    t0 = time.time()
    data = datamod.load(job["data"])
    for config in job["configs"]:
        fit(MODELS["bpr_mf"], config, data, lambda m, g: None)
    print(json.dumps({"seconds": time.time() - t0}))


def run_overhead(args, tmp: str) -> list:
    from tuner import spec as specmod
    from tuner import cluster, sweep

    path = smoke_file(tmp, args.data) if args.smoke_test else args.data
    epochs = 2 if args.smoke_test else 5
    cluster.start(None, 0)
    walls, configs = {}, None
    for c in (1, 2):
        spec = specmod.load(write_spec(tmp, overhead_spec(tmp, path, c, epochs)))
        t0 = time.time()
        res = sweep.run(spec, output=os.path.join(tmp, f"runs{c}"), verbose=0)
        walls[c] = time.time() - t0
        configs = configs or [{"lr": float(r["lr"]), "dim": int(r["dim"]), "epochs": epochs} for _, r in res.table.iterrows()]
    # the same 8 trainings in a fresh process (like a user's script), one after another
    job = os.path.join(tmp, "plain.json")
    with open(job, "w") as fh:
        json.dump({"data": path, "configs": configs}, fh)
    plain_s = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "--plain", job], check=True,
                                      capture_output=True, text=True, cwd=ROOT).stdout.splitlines()[-1])["seconds"]
    out = [figure("overhead", "Plain loop: 8 BPR-MF trainings x 5 epochs (s)", plain_s, "s", None, None,
                  f"a fresh process: load Beauty, trainables.loop.fit x 8, {os.cpu_count()} threads, validation every epoch")]
    for c in (1, 2):
        ratio = walls[c] / plain_s
        out.append(figure("overhead", f"`tuner run` 8 trials x 5 epochs, concurrency {c} / plain loop", ratio, "x",
                          "<= 1.15", ratio <= 1.15,
                          f"{walls[c]:.1f}s vs {plain_s:.1f}s; ray.init excluded; includes the popularity baseline, "
                          "MLflow, a checkpoint every epoch, test metrics of the best trial and the HTML report"))
    out.append(figure("overhead", "Concurrency 2 (1 CPU each) / concurrency 1 (2 CPUs), total wall", walls[2] / walls[1], "x",
                      "<= 1.0", walls[2] <= walls[1], "each trial sets torch threads to the CPUs Ray gave it"))
    return out


# --- memory -----------------------------------------------------------------------------------

def memory_cases(args, tmp: str) -> list:
    """(label, spec body) per model default config, plus SASRec full CE on BERT4Rec's Beauty."""
    beauty = smoke_file(tmp, args.data) if args.smoke_test else args.data
    big = smoke_file(tmp, BERT4REC_BEAUTY, 2000) if args.smoke_test else BERT4REC_BEAUTY
    beauty_data = data_block(beauty)
    cases = [(m, {"model": m, "data": beauty_data}) for m in ("bpr_mf", "two_tower", "sasrec")]
    cases.append(("multimodal", {"model": "multimodal", "data": {**beauty_data, "item_attributes": BEAUTY_ATTRS}}))
    cases.append(("fusion_classifier", {"model": "fusion_classifier", "metric": {"name": "val_macro_f1"}}))
    cases.append(("sasrec full CE, BERT4Rec Beauty", {"model": "sasrec", "data": {"source": "file", "path": big},
                                                     "fixed": {"loss": "ce", "batch_size": 256, "maxlen": 50}}))
    return cases


def child(spec_path: str) -> None:
    """One epoch of a spec's fixed config + validation in this process; prints peak RSS as JSON."""
    from trainables.loop import fit, peak_rss_mb
    from tuner import spec as specmod

    spec = specmod.load(spec_path)
    entry = spec.model_entry()
    data = entry.dataset(spec)
    before = peak_rss_mb()
    t0 = time.time()
    reports = []
    fit(entry, {**spec.fixed, "epochs": 1}, data, lambda m, g: reports.append(m), ks=spec.eval.ks)
    print(json.dumps({"peak_rss_mb": reports[-1]["peak_rss_mb"], "rss_before_training_mb": before,
                      "seconds": time.time() - t0, "data": data.describe() if hasattr(data, "describe") else ""}))


def run_memory(args, tmp: str) -> list:
    out = []
    for i, (label, body) in enumerate(memory_cases(args, tmp)):
        path = write_spec(tmp, {"name": f"mem{i}", **body})
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {label} failed:\n{proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        big = "BERT4Rec" in label
        out.append(figure("memory", f"Peak RSS, {label}{'' if big else ' default config'} (MB)", r["peak_rss_mb"], "MB",
                          "< 3000" if big else None, r["peak_rss_mb"] < 3000 if big else None,
                          f"{r['data']}; 1 epoch + validation in {r['seconds']:.0f}s; "
                          f"{r['rss_before_training_mb']:.0f} MB after imports and data"))
    return out


# --- table ------------------------------------------------------------------------------------

def external_rows() -> list:
    """Rows of the separately run scripts, when their results exist."""
    rows = []
    for name, section in (("search_efficiency.json", "search"), ("peers_recbole.json", "peers")):
        path = os.path.join(RESULTS, name)
        if os.path.exists(path):
            with open(path) as fh:
                rows += [{"section": section, "unit": "", "target": None, "met": None, "note": "", **f}
                         for f in json.load(fh).get("figures", [])]
    for row in rows:  # a figure over repeats shows every repeat's value
        if row.get("values") and not row["note"]:
            row["note"] = "mean; per repeat " + ", ".join(f"{v:.3f}" for v in row["values"])
    return rows


def recbole_floor() -> float | None:
    """RecBole's training + evaluation seconds over the epochs it ran: its time to quality is longer
    than this when none of those epochs reached the target."""
    path = os.path.join(RESULTS, "peers_recbole.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        epochs = json.load(fh).get("per_epoch", [])
    return sum(e["train_seconds"] + e["eval_seconds"] for e in epochs) or None


def side_by_side(ours: list, peers: list) -> list:
    """Ours / RecBole for the three figures measured by both, when both exist (same machine)."""
    def find(rows, start):
        return next((f["value"] for f in rows if f["name"].startswith(start) and f.get("value") is not None), None)

    pairs = (("Time to quality, ours / RecBole", "Time to quality", "RecBole time to val", "<= 0.25"),
             ("SASRec full-CE epoch, ours / RecBole", "SASRec full-CE training epoch", "RecBole SASRec CE epoch", None),
             ("Full-ranking eval of all users, ours / RecBole", "Full-ranking eval, sasrec", "RecBole full-ranking eval",
              "<= 0.25"))
    out = []
    for name, mine, theirs, target in pairs:
        a, b = find(ours, mine), find(peers, theirs)
        bound = ""
        if b is None and theirs.startswith("RecBole time") and peers:
            b, bound = recbole_floor(), "< "  # RecBole never got there: its time is above its whole run
        if a is not None and b:
            ratio = a / b
            out.append(figure("peers", name, ratio, "x", target, None if target is None else ratio <= 0.25,
                              f"{bound}{ratio:.3f}: {fmt(a, 's')} vs {'> ' if bound else ''}{fmt(b, 's')}"
                              f"{' (not reached in its epochs run)' if bound else ''}, "
                              "benchmarks/peers/recbole_sasrec.py on this machine"))
    return out


def fmt(value, unit: str) -> str:
    if value is None:
        return "not reached"
    if unit == "1/s":
        return f"{value / 1e6:.2f}M/s"
    if unit in ("x", "ratio"):
        return f"{value:.3f}"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "s":
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    return f"{value}"


def table(store: dict, external: bool = True) -> str:
    ours = [f for s in SECTIONS for f in store.get("sections", {}).get(s, {}).get("figures", [])]
    ext = external_rows() if external else []
    rows = ours + ext + side_by_side(ours, [f for f in ext if f["section"] == "peers"])
    m = store.get("machine", {})
    lines = [f"Machine: {m.get('cores', os.cpu_count())} cores ({m.get('cpu', '')}), torch {m.get('torch', '')}, "
             f"{m.get('platform', '')}. Sections run at: " + ", ".join(
                 f"{s} {v['when']} (load {v['loadavg'][0]:.1f})" for s, v in store.get("sections", {}).items()),
             "", "| section | figure | value | target | met | note |", "|---|---|---|---|---|---|"]
    for f in rows:
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        lines.append(f"| {f['section']} | {f['name']} | {fmt(f.get('value'), f.get('unit', ''))} | "
                     f"{f.get('target') or ''} | {met} | {f.get('note', '')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    ap.add_argument("--table", action="store_true", help="print the stored table; run nothing")
    ap.add_argument("--smoke-test", action="store_true", help="tiny data, every section, nothing stored")
    ap.add_argument("--data", default=BEAUTY)
    ap.add_argument("--ttq-epochs", type=int, default=15)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--plain", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child or args.plain:
        child(args.child) if args.child else plain(args.plain)
        return 0
    store_path = os.path.join(RESULTS, "fast_trials.json")
    store = {}
    if os.path.exists(store_path):
        with open(store_path) as fh:
            store = json.load(fh)
    if args.table:
        print(table(store))
        return 0
    sections = [s for s in args.only.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"benchmarks/run.py: --only: unknown section {bad[0]!r}; valid: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    for path in (args.data, *([BERT4REC_BEAUTY] if "memory" in sections else [])):
        if not os.path.isfile(path):
            print(f"benchmarks/run.py: data file not found: {path}", file=sys.stderr)
            return 2
    import torch

    store["machine"] = {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "platform": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        for s in sections:
            load = os.getloadavg()
            t0 = time.time()
            figs = globals()[f"run_{s}"](args, tmp)
            for f in figs:
                print(f"{f['name']}: {fmt(f['value'], f['unit'])}  target {f['target'] or '-'}  {f['note']}", flush=True)
            store.setdefault("sections", {})[s] = {"figures": figs, "when": time.strftime("%Y-%m-%d %H:%M"),
                                                   "loadavg": load, "seconds": round(time.time() - t0, 1)}
    if args.smoke_test:
        print(table({**store, "sections": {s: store["sections"][s] for s in sections}}, external=False))
        return 0
    os.makedirs(RESULTS, exist_ok=True)
    with open(store_path, "w") as fh:
        json.dump(store, fh, indent=1)
    text = table(store)
    with open(os.path.join(RESULTS, "fast_trials.md"), "w") as fh:
        fh.write("# Fast trials: figures beside their targets\n\n`python benchmarks/run.py`\n\n" + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/run.py"))
