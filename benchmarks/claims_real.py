"""`python benchmarks/claims.py --real`: the seeds' claims on real data, each side at its own tuned lr.

Data: seed 004's claims (fusion_classifier) run on the UCI Multiple Features digits, made
imbalanced by benchmarks/uci_mfeat.py (754 digits, 6 views, 10 classes); every recommender claim
runs on Amazon Beauty (../shared/data/s3rec/Beauty.txt, plus Beauty_item2attributes.json for the
multimodal model), skipped when that file is absent; claims about sequence models (SEQUENCE_MODELS)
run a second time on LastFM (../shared/data/s3rec/LastFM.txt: 1,090 users, 3,646 artists, 52,551
listens, S3-Rec's preprocessing), a denser data set with longer histories (median 38 vs 6 items).

Per claim and side: first a learning-rate search (tuner.sweep.run on the side's configuration with
only `lr` searched, log-uniform over the base spec's own lr range, LR_TRIALS Optuna-TPE trials with
a fixed seed, FIFO, the spec's validation metric, the data set's Budget.search_epochs each); then the
side's best lr is fixed and `tuner.compare.run` runs SEEDS seeds per side with early stopping
(Budget.patience epochs without improvement of the validation metric) under an epoch cap
(Budget.cap). The recommender claims on
Beauty are hours of CPU on a 2-core machine; they are built here but run in CI only with
--smoke-test (2 seeds, 2 epochs, 2 lr candidates, 300 Beauty users).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

SEEDS = 5


@dataclasses.dataclass(frozen=True)
class Budget:
    search_epochs: int  # epochs of each lr-search trial
    cap: int  # epoch cap of each compare run
    patience: int  # epochs without a validation gain before a compare run stops


# per data set (the labels of datasets_of). An epoch is one pass over the users: Beauty's 22,363 users
# make 88 steps of 256, LastFM's 1,090 only 9, so LastFM gets more epochs and more patience (its
# validation metric, over 1,090 users, is noisier).
BUDGETS = {"UCI mfeat, imbalanced": Budget(30, 60, 10), "Amazon Beauty": Budget(10, 30, 10),
           "LastFM": Budget(50, 200, 20)}
# SASRec on Beauty learns slower than the two-tower models there: the hand-set BCE 1-negative run
# peaked at epoch 90 of 100 (benchmarks/results/sasrec_beauty.md), so its cap is 100, not 30.
MODEL_BUDGETS = {("Amazon Beauty", "sasrec"): Budget(15, 100, 10)}
DATA_OPTIONS = {"uci": "UCI mfeat, imbalanced", "beauty": "Amazon Beauty", "lastfm": "LastFM"}  # claims.py --data
SMOKE = Budget(2, 2, 1)
LR_TRIALS = 6
DEFAULT_LR = dict(low=1.0e-4, high=1.0e-2)
SEQUENCE_MODELS = ("sasrec",)  # their claims also run on LastFM
BEGIN, END = "<!-- real-data: begin -->", "<!-- real-data: end -->"


def lr_param(spec):
    """The base spec's own lr range (log-uniform), or 1e-4..1e-2."""
    from tuner import spec as specmod
    from tuner.sections import Param

    base = specmod.load(spec.path)
    for p in base.space:
        if p.name == "lr" and p.type == "float":
            return Param("lr", "float", p.low, p.high, log=True)
    return Param("lr", "float", DEFAULT_LR["low"], DEFAULT_LR["high"], log=True)


def moved(v, over: dict, smoke: bool):
    """Variant v with its data section replaced by `over` (smoke settings re-applied)."""
    from tuner import compare
    from tuner import spec as specmod

    spec = specmod.load(v.spec.path, {"space": {}, "scheduler": {"type": "fifo"},  # compare and lr search: FIFO
                                      **{f"fixed.{k}": x for k, x in v.spec.fixed.items()}, **over})
    return compare.Variant(v.name, specmod.smoke(spec) if smoke else spec)


def datasets_of(claim, manifest: str | None, files: dict, attrs: str) -> list[tuple[str, dict]]:
    """[(label, data overrides)] of a claim's real data sets; absent files are left out.

    files: {"beauty": path, "lastfm": path}."""
    if claim.a.spec.model == "fusion_classifier":
        return [("UCI mfeat, imbalanced", {"data.source": "file", "data.path": manifest})]
    out = []
    if os.path.isfile(files["beauty"]):
        over = {"data.source": "file", "data.path": files["beauty"]}
        if claim.a.spec.model == "multimodal":
            over["data.item_attributes"] = attrs
        out.append(("Amazon Beauty", over))
    if claim.a.spec.model in SEQUENCE_MODELS and os.path.isfile(files.get("lastfm") or ""):
        out.append(("LastFM", {"data.source": "file", "data.path": files["lastfm"]}))
    return out


def run_all(files: list[str], *, smoke: bool, output: str, data: dict, attrs: str,
            only: tuple[str, ...] = (), on_result=None, gpu: float = 0.0) -> list[dict]:
    """Every claim file on its real data sets (module docstring); prints each result as it comes.

    data: {"beauty": path, "lastfm": path}; only: run just these data sets (keys of DATA_OPTIONS),
    e.g. ("lastfm",); on_result(results so far) after each claim, so a
    run of hours that is stopped keeps the claims it finished; gpu: each run's share of a GPU
    (resources.gpu; 0 = CPU only)."""
    from tuner import compare

    claims = [(os.path.splitext(os.path.basename(f))[0], compare.load_claim(f, smoke=smoke)) for f in files]
    manifest = None
    if any(c.a.spec.model == "fusion_classifier" for _, c in claims):
        import uci_mfeat

        manifest = uci_mfeat.prepare(reuse=True)
    results = []
    for name, claim in claims:
        where = [w for w in datasets_of(claim, manifest, data, attrs)
                 if not only or w[0] in {DATA_OPTIONS[o] for o in only}]
        if not where:
            print(f"== {name}: skipped (no real data set for it here)", flush=True)
        for label, over in where:
            # on a GPU, as many runs at once as the shares fit (lr-search trials and compare seeds alike)
            over = {**over, "resources.gpu": gpu, "search.concurrency": max(1, int(1 / gpu))} if gpu else over
            results.append(run_claim(claim, name, label, over, smoke=smoke, output=output))
            print(details(results[-1]), flush=True)
            if on_result:
                on_result(results)
    return results


def slug(path: str | None) -> str:
    """'Beauty' for ../shared/data/s3rec/Beauty.txt: tells the sweeps of one claim on two data sets apart."""
    return re.sub(r"[^A-Za-z0-9]+", "-", os.path.splitext(os.path.basename(path or "data"))[0]).strip("-")


def tune_lr(v, side: str, title: str, budget: Budget, *, output: str, verbose: int = 0) -> dict:
    """A sweep over lr only, on validation; returns {lr, seconds, trials, best_val}."""
    from tuner import sweep

    spec = v.spec
    fixed = {k: x for k, x in spec.fixed.items() if k != "lr"}
    epochs = budget.search_epochs
    trials = 2 if budget == SMOKE else LR_TRIALS
    spec = spec.replace(name=f"{title}-lr-{side}-{slug(spec.data.path)}", fixed={**fixed, "epochs": epochs}, space=(lr_param(spec),),
                        search=dataclasses.replace(spec.search, samples=trials, algo="tpe", seed=0),
                        scheduler=dataclasses.replace(spec.scheduler, type="fifo"))
    t0 = time.time()
    stage(f"lr search, side {side} ({v.name}): {trials} trials x {epochs} epochs")
    res = sweep.run(spec, output=output, verbose=verbose)
    return {"lr": float(res.best_config["lr"]), "seconds": time.time() - t0, "trials": trials, "epochs": epochs,
            "best_val": float(res.best_val.get(spec.metric.name, float("nan"))), "metric": spec.metric.name}


def run_claim(claim, title: str, dataset: str, over: dict, *, smoke: bool, output: str) -> dict:
    """lr search per side, then the compare at SEEDS seeds with patience; one result dict."""
    from tuner import compare

    t0 = time.time()
    a, b = moved(claim.a, over, smoke), moved(claim.b, over, smoke)
    budget = SMOKE if smoke else MODEL_BUDGETS.get((dataset, a.spec.model), BUDGETS[dataset])
    verbose = 0 if smoke else 1  # hours on real data: the live progress lines of `tuner run`
    stage(f"{title} on {dataset}")
    lrs = {"A": tune_lr(a, "A", title, budget, output=output, verbose=verbose),
           "B": tune_lr(b, "B", title, budget, output=output, verbose=verbose)}
    cap = budget.cap

    def fix(v, side):
        return dataclasses.replace(v, spec=v.spec.replace(fixed={**v.spec.fixed, "lr": lrs[side]["lr"], "epochs": cap}))

    real = dataclasses.replace(claim, a=fix(a, "A"), b=fix(b, "B"), seeds=2 if smoke else SEEDS,
                               patience=budget.patience)
    stage(f"compare: lr A {lrs['A']['lr']:.3g}, B {lrs['B']['lr']:.3g}; {real.seeds} seeds per side, cap {cap} "
          f"epochs, patience {real.patience}")
    res = compare.run(real, output=output, verbose=verbose)
    return {"name": title, "dataset": dataset, "data": res.extra["dataset"], "claim": real, "lrs": lrs, "cap": cap,
            "result": res, "wall": time.time() - t0, "hardware": hardware(a.spec.resources.gpu)}


def hardware(gpu: float) -> str:
    """Where a claim ran, for its wall time: '2 CPU cores', or the GPU and each run's share of it."""
    import torch

    if gpu and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {gpu:g} GPU per run, {os.cpu_count()} CPU cores"
    return f"{os.cpu_count()} CPU cores"


def stage(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} == {text}", flush=True)


def _g(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.2e}"


def table_rows(r: dict) -> list[str]:
    """One markdown row per metric of a claim's real-data result."""
    c, lrs, rows = r["claim"], r["lrs"], r["result"].rows
    out = []
    for i, row in enumerate(rows):
        p = " / ".join("–" if x != x else f"{x:.2g}" for x in (row.p_t, row.p_wilcoxon, row.p_sign))
        head = (f"| {r['name']} | {r['dataset']} | {row.n} | {c.a.name} {lrs['A']['lr']:.3g} · {c.b.name} "
                f"{lrs['B']['lr']:.3g} |") if i == 0 else "| | | | |"
        out.append(f"{head} {row.metric} | {row.mean_a:.4g} | {row.mean_b:.4g} | {_g(row.diff)} "
                   f"[{_g(row.ci_low)}, {_g(row.ci_high)}] | {p} | {row.verdict} | "
                   + (f"{r['wall']:.0f} s (lr search {lrs['A']['seconds'] + lrs['B']['seconds']:.0f} s)"
                      + (f" on {r['hardware']}" if "GPU" in r.get("hardware", "") else "") + " |"
                      if i == 0 else " |"))
    return out


def details(r: dict) -> str:
    lrs, c = r["lrs"], r["claim"]
    search = "; ".join(f"{side} ({v.name}) lr {lrs[side]['lr']:.3g} (best {lrs[side]['metric']} "
                       f"{lrs[side]['best_val']:.4f}, {lrs[side]['trials']} trials x {lrs[side]['epochs']} epochs, "
                       f"{lrs[side]['seconds']:.0f} s)" for side, v in (("A", c.a), ("B", c.b)))
    return (f"### {r['name']} on {r['dataset']}\n\n{c.claim}\n\nData {r['data']}. lr search: {search}. "
            f"Compare: {c.seeds} seeds per side, cap {r['cap']} epochs, patience {c.patience}; "
            f"total wall time {r['wall']:.0f} s on {r.get('hardware', 'CPU')}.\n\n{r['result'].markdown}\n")


HEADER = ("| claim | data | N | lr (A · B) | metric | mean A | mean B | B - A [95% CI] | p (t / Wilcoxon / sign) "
          "| verdict | wall |\n|---|---|---:|---|---|---:|---:|---|---|---|---:|\n")


def write_doc(path: str, results: list[dict], load: str) -> None:
    """Put (or refresh) the real-data section at the top of docs/claims.md; rows of claims not run now stay."""
    old = open(path).read() if os.path.exists(path) else ""
    kept_rows: list[str] = []
    kept_details: list[str] = []
    keys = {(r["name"], r["dataset"]) for r in results}  # a claim is re-run per data set
    if BEGIN in old and END in old:
        block = old[old.index(BEGIN):old.index(END)]
        summary = block.split("\n### ", 1)[0]  # the summary table only: each claim's own table follows it
        rows = [ln for ln in summary.splitlines() if ln.startswith("| ") and not ln.startswith("| claim |")]
        keep = False
        for ln in rows:
            cells = [c.strip() for c in ln.split("|")]
            keep = ((cells[1], cells[2]) not in keys) if cells[1] else keep  # continuation rows follow their head
            if keep:
                kept_rows.append(ln)
        heads = {f"### {n} on {d}" for n, d in keys}
        kept_details = [d.rstrip("\n") + "\n" for d in re.split(r"(?m)^(?=### )", block)
                        if d.startswith("### ") and d.splitlines()[0].strip() not in heads]
        old = (old[:old.index(BEGIN)] + old[old.index(END) + len(END):]).lstrip("\n")
    rows = kept_rows + [ln for r in results for ln in table_rows(r)]
    dets = kept_details + [details(r) for r in results]
    body = (f"{BEGIN}\n# The seeds' claims on real data\n\nGenerated by `python benchmarks/claims.py --real "
            f"[claims]` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, shared; `uptime` load at the "
            f"start of the latest run: {load}). Each side first gets its own learning rate ({LR_TRIALS} Optuna-TPE trials over "
            f"lr, log-uniform in the base spec's range, best validation metric); then {SEEDS} seeds per side "
            f"with early stopping under an epoch cap (per data set, lr-search epochs / cap / patience: "
            + ", ".join(f"{k.split(',')[0]} {b.search_epochs} / {b.cap} / {b.patience}" for k, b in BUDGETS.items())
            + "; " + ", ".join(f"{m} on {k} {b.search_epochs} / {b.cap} / {b.patience}" for (k, m), b in MODEL_BUDGETS.items())
            + "); test metrics from each run's "
            f"best-validation checkpoint; B - A with a 95% paired t-interval. Seed 004 runs on the UCI "
            f"Multiple Features digits made imbalanced (benchmarks/uci_mfeat.py); the recommender claims "
            f"run on Amazon Beauty, and the sequence claims (seed 003) on LastFM too (hours of CPU here: "
            f"the table lists the claims run so far).\n\n"
            f"{HEADER}" + "\n".join(rows) + "\n\n" + "\n".join(dets) + f"\n{END}\n\n")
    with open(path, "w") as fh:
        fh.write(body + old)
