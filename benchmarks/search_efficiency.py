"""Search efficiency: ASHA + TPE against random search run to full length, on Beauty BPR-MF.

    python benchmarks/search_efficiency.py                # 3 repeats on ../shared/data/s3rec/Beauty.txt (hours)
    python benchmarks/search_efficiency.py --repeats 1    # one repeat: ~110 + 320 trial-epochs on Beauty
    python benchmarks/search_efficiency.py --smoke-test   # under a minute: small synthetic data, 4 trials x 3 epochs
    python benchmarks/search_efficiency.py --repeats 5 --samples 48 --set search.multivariate=true \
        --set search.group=true --tag _mvtpe48           # a TPE variant, written beside the main result
    python benchmarks/search_efficiency.py --repeats 1 --first-repeat 0 --samples 32 \
        --extend-random benchmarks/results/search_efficiency.json --tag _32  # 16 stored random draws + 16 new
    python benchmarks/search_efficiency.py --repeats 1 --first-repeat 2 \
        --reuse-random benchmarks/results/search_efficiency_32_g1r4.json --set search.samples=64 \
        --set search.epoch_budget=224 --set search.concurrency=1 ... --tag _b224  # ASHA+TPE given 35% of
                                                   # random's 32 x 20 trial-epochs, at most 64 trials

Target (issue): ASHA + TPE with the default bpr.yaml budget reaches >= 98% of the best validation
NDCG@10 found by random search over the same number of configs run to full length, while spending
<= 35% of its trial-epochs; 3 repeats, report all.

Protocol, for repeat r = 0..R-1, both sweeps through the project's own API (spec.load + dotted
overrides, the same mechanism as `tuner run --set`, then sweep.run):
  (a) ASHA + TPE: search_spaces/bpr.yaml unchanged but data = the Beauty file and search.seed = r
      (its budget: 16 samples, max 20 epochs, pathology stopper on, and its scheduler: ASHA with
      promotions, grace 2, reduction 3, rungs at epochs 2 and 6);
  (b) random: the same spec with search.algo = random, scheduler.type = fifo and
      diagnose.enabled = false, so every trial runs all 20 epochs (samples x max epochs).
Both samplers are seeded with r, and TPE draws its first 10 configs at random, so those 10 are the
random search's first 10 (a paired comparison: ASHA must not stop the good ones).
From each sweep's trials table (trials.csv): best = max over trials of best_val_ndcg_10 (the best
validation NDCG@10 over all trials and epochs), trial-epochs = sum of epochs_run.
Per repeat: ratio = asha_best / random_best (target >= 0.98) and
epoch_fraction = asha_epochs / random_epochs (target <= 0.35); a target is met if every repeat meets it.

Writes <output>/search_efficiency.{json,md} (smoke: search_efficiency_smoke.{json,md}); output
defaults to benchmarks/results. Sweep folders (MLflow, Optuna, checkpoints) go to a temporary
directory that is deleted at the end; each sweep's trials table is kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SPEC = os.path.join(ROOT, "search_spaces", "bpr.yaml")
BEAUTY = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s3rec", "Beauty.txt"))
RATIO_TARGET, EPOCHS_TARGET = 0.98, 0.35
SMOKE = {"search.samples": 4, "fixed.epochs": 3,  # a sixth of bpr.yaml's synthetic data: seconds per sweep
         "data.synthetic.n_users": 500, "data.synthetic.n_items": 200}
EXTEND_SEED = 1000  # --extend-random's added draws use search seed 1000 + r: never a repeat's own seed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first-repeat", type=int, default=None,
                    help="run repeats first..first+repeats-1 and merge them into an existing JSON's rows "
                         "(its other repeats are kept, whichever run finishes first)")
    ap.add_argument("--data", default=BEAUTY)
    ap.add_argument("--output", default=os.path.join(HERE, "results"), help="where the JSON and MD go")
    ap.add_argument("--smoke-test", action="store_true", help="500 users of the spec's synthetic data, 4 trials x 3 epochs, 1 repeat")
    ap.add_argument("--reuse-random", metavar="JSON", help="take each repeat's random search (which the ASHA "
                    "settings do not affect) from this earlier JSON instead of running it again")
    ap.add_argument("--extend-random", metavar="JSON", help="as --reuse-random, and where that random search has "
                    f"fewer trials than --samples, run the missing ones as a second random sweep seeded {EXTEND_SEED} + r "
                    "and take the union (random draws are independent, so the union is a random search of --samples "
                    "configs; its first ones stay paired with TPE's random start-up)")
    ap.add_argument("--stop-at-target", action="store_true", help="end each ASHA + TPE sweep once a trial reaches "
                    f"{RATIO_TARGET} x that repeat's random best (search.stop_at; needs --reuse-random): the trial-epochs "
                    "it took to reach the target, where a run to its --set search.epoch_budget gives the same verdict")
    ap.add_argument("--samples", type=int, help="trials per sweep, both arms (default: bpr.yaml's 16)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a spec override for the ASHA + TPE arm only, as `tuner run --set` (repeatable), e.g. "
                         "search.multivariate=true search.group=true search.n_startup_trials=8")
    ap.add_argument("--tag", default="", help="appended to the output names (search_efficiency<tag>.json), "
                                              "so a variant does not overwrite the main result")
    ap.add_argument("--replay", metavar="JSON", help="no sweeps: replay ASHA schedules on the random searches' "
                    "full-length curves stored in JSON and print what each would have kept and spent")
    ap.add_argument("--variants", action="store_true", help="no sweeps: one row per stored result in --output "
                    "(each variant's repeats side by side), written to search_efficiency_variants.md")
    args = ap.parse_args(argv)
    if args.replay:
        print(replay_table(args.replay))
        return 0
    if args.variants:
        try:
            text = variants_table(args.output)
        except ValueError as e:
            text, why = None, str(e)
        else:
            why = f"no search_efficiency*.json results in {args.output}"
        if text is None:
            print(f"benchmarks/search_efficiency.py: --variants: {why}", file=sys.stderr)
            return 2
        with open(os.path.join(args.output, "search_efficiency_variants.md"), "w") as fh:
            fh.write(text)
        print(text, end="")
        return 0
    if not args.smoke_test and not os.path.isfile(args.data):
        print(f"benchmarks/search_efficiency.py: data file not found: {args.data}", file=sys.stderr)
        return 2

    from tuner import cluster

    repeats = 1 if args.smoke_test else args.repeats
    from trainables.errors import TunerError
    from tuner import spec as specmod
    from tuner.pipeline import Interrupted

    both = {"search.samples": args.samples} if args.samples is not None else {}
    try:
        args.overrides = overrides_of(args.set)
        specmod.load(SPEC, {**both, **args.overrides})  # a bad key or value: one line before Ray starts
    except (ValueError, TunerError) as e:
        print(f"benchmarks/search_efficiency.py: {'--set ' if isinstance(e, ValueError) else ''}{e}", file=sys.stderr)
        return 2
    if args.reuse_random and args.extend_random:
        print("benchmarks/search_efficiency.py: --reuse-random and --extend-random: give one", file=sys.stderr)
        return 2
    if args.extend_random and args.samples is None:
        print("benchmarks/search_efficiency.py: --extend-random needs --samples (how many configs the union holds)",
              file=sys.stderr)
        return 2
    if args.stop_at_target and not args.reuse_random:
        print("benchmarks/search_efficiency.py: --stop-at-target needs --reuse-random (the random best it aims at)",
              file=sys.stderr)
        return 2
    reused_from = args.reuse_random or args.extend_random
    reused = random_arms(reused_from) if reused_from else {}
    if args.samples is not None:  # a random arm of another size is no baseline: 16 draws against 32 samples
        flag = "--reuse-random" if args.reuse_random else "--extend-random"
        sizes = {r: len(arm["trials"]) for r, arm in reused.items()
                 if len(arm["trials"]) > args.samples or (args.reuse_random and len(arm["trials"]) != args.samples)}
        if sizes:
            print(f"benchmarks/search_efficiency.py: {flag} {reused_from}: repeat "
                  f"{', '.join(f'{r} has {n} trials' for r, n in sizes.items())}, not --samples {args.samples}"
                  + (" (--extend-random adds the missing draws)" if args.reuse_random else ""), file=sys.stderr)
            return 2
    load_start = os.getloadavg()
    cluster.start(None, 0)  # once, so neither sweep's wall time includes Ray's start
    rows = []
    try:
        run_repeats(args, repeats, both, reused, rows)
    except (Interrupted, KeyboardInterrupt):  # Ctrl+C: the sweeps lived in a temp folder, nothing to resume
        done = ", ".join(str(row["repeat"]) for row in rows) or "none"
        print(f"benchmarks/search_efficiency.py: interrupted; nothing written (repeats finished: {done})",
              file=sys.stderr)
        return 130

    stem = os.path.join(args.output, "search_efficiency" + args.tag + ("_smoke" if args.smoke_test else ""))
    # given (0 too): merged into the file's other repeats, so repeats may run side by side in any order
    rows, kept = merge_rows(stem + ".json", rows) if args.first_repeat is not None else (rows, [])
    record = summarize(rows, args, load_start, kept)
    os.makedirs(args.output, exist_ok=True)
    with open(stem + ".json", "w") as fh:
        json.dump(record, fh, indent=2, default=str)
    with open(stem + ".md", "w") as fh:
        fh.write(markdown(record))
    print(markdown(record))
    return 0


def run_repeats(args, repeats: int, both: dict, reused: dict, rows: list) -> None:
    """Each repeat's two sweeps, its row appended to `rows` as it finishes."""
    with tempfile.TemporaryDirectory(prefix="search_efficiency-") as tmp:
        first = args.first_repeat or 0
        for r in range(first, first + repeats):
            target = ({"search.stop_at": RATIO_TARGET * reused[r]["best"] * (1 + 1e-9)}  # 1e-9: ratio >= 0.98
                      if args.stop_at_target and r in reused else {})  # after rounding too
            asha = run_sweep(args, tmp, {"name": f"asha-tpe-r{r}", "search.seed": r, **both, **args.overrides, **target})
            rand_over = {"search.algo": "random", "scheduler.type": "fifo", "diagnose.enabled": False}
            rand = reused.get(r) or run_sweep(args, tmp, {"name": f"random-r{r}", "search.seed": r, **rand_over, **both})
            missing = (args.samples - len(rand["trials"])) if args.extend_random else 0  # >= 0, checked above
            if missing:
                more = run_sweep(args, tmp, {"name": f"random-r{r}-more", "search.seed": EXTEND_SEED + r, **rand_over,
                                             "search.samples": missing})
                rand = union(rand, more, EXTEND_SEED + r)
            rows.append({**compare(r, asha, rand), "command": command_of(args, r),
                         **({"asha_stop_at": target["search.stop_at"]} if target else {})})
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith(("trials", "curves"))}, default=str), flush=True)


def overrides_of(pairs: list[str]) -> dict:
    """['search.multivariate=true', ...] -> {'search.multivariate': True, ...} (values read as YAML)."""
    import yaml

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{pair!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_sweep(args, tmp: str, overrides: dict) -> dict:
    """One sweep of bpr.yaml with `overrides` (plus the data or smoke overrides); its numbers."""
    from tuner import spec as specmod
    from tuner import sweep

    if args.smoke_test:
        over = SMOKE
    else:
        over = {"data.source": "file", "data.path": os.path.abspath(args.data)}
    spec = specmod.load(SPEC, {**over, **overrides})
    t0 = time.time()
    res = sweep.run(spec, output=tmp, verbose=0)
    wall = time.time() - t0
    table = res.table
    metric = f"best_{spec.metric.name}"
    return {
        "best": float(table[metric].max()), "epochs": int(table["epochs_run"].sum()),
        "full_budget": spec.search.samples * spec.max_epochs(), "wall_seconds": round(wall, 1),
        "best_config": res.best_config, "status_counts": table["status"].value_counts().to_dict(),
        # each trial's config too: two runs of one repeat can then be compared proposal by proposal (with 2
        # workers, which trials have finished when TPE proposes depends on timing, so runs diverge)
        "trials": [{k: v for k, v in rec.items() if v == v}  # a knob its condition left out is NaN: dropped
                   for rec in table[["trial", "status", "epochs_run", metric, *(p.name for p in spec.space)]]
                   .to_dict("records")],
        "curves": curves(res, spec.metric.name),
    }


def curves(res, metric: str) -> dict[str, list[float]]:
    """trial number -> its validation metric per epoch, read back from the sweep's MLflow runs, so a
    different ASHA schedule can be replayed offline on the random search's full-length curves."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(res.tracking_uri)
    runs = client.search_runs([res.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'",
                              max_results=1000)
    out = {}
    for run in runs:
        hist = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        out[run.data.tags.get("tuner.trial_number", run.info.run_id)] = [m.value for m in hist]
    return dict(sorted(out.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))


def random_arms(path: str) -> dict[int, dict]:
    """repeat -> its random search as run_sweep returns it, from an earlier JSON's rows."""
    with open(path) as fh:
        rows = json.load(fh)["rows"]
    return {row["repeat"]: {"best": row["random_best"], "epochs": row["random_epochs"], "full_budget": row["full_budget"],
                            "wall_seconds": row["random_wall_seconds"], "best_config": row["random_best_config"],
                            "status_counts": row["random_status_counts"], "trials": row["random_trials"],
                            "curves": row.get("random_curves", {}), "reused_from": os.path.relpath(path, ROOT)}
            for row in rows}


def union(first: dict, more: dict, seed: int) -> dict:
    """Two random searches as one: `more`'s trials numbered after `first`'s; curves as far as either has
    them (replay_rows skips a search without a curve for every trial)."""
    # numbered on from first's last trial, whether a table counts from 0 (now) or from 1 (older JSONs)
    shift = max(int(t["trial"]) for t in first["trials"]) + 1 - min(int(t["trial"]) for t in more["trials"])
    trials = first["trials"] + [{**t, "trial": int(t["trial"]) + shift} for t in more["trials"]]
    counts = dict(first["status_counts"])
    for status, c in more["status_counts"].items():
        counts[status] = counts.get(status, 0) + c
    curves = {**first["curves"], **{str(int(k) + shift): v for k, v in more["curves"].items()}}
    return {"best": max(first["best"], more["best"]), "epochs": first["epochs"] + more["epochs"],
            "full_budget": first["full_budget"] + more["full_budget"],
            "wall_seconds": round(first["wall_seconds"] + more["wall_seconds"], 1),
            "best_config": first["best_config"] if first["best"] >= more["best"] else more["best_config"],
            "status_counts": counts, "trials": trials, "curves": curves,
            "reused_from": f"{first.get('reused_from') or 'this run'} + {len(more['trials'])} draws seeded {seed}"}


def asha_replay(curves: list[list[float]], grace: int, eta: int) -> tuple[float, int]:
    """Ray's ASHA (one bracket, mode max) replayed on full-length curves, trials arriving in order:
    at each rung (SchedulerSpec.rungs, as the sweep's) a trial stops if its value is below the (1 - 1/eta) quantile
    of the values earlier trials recorded there. Returns (best value seen, trial-epochs spent)."""
    import numpy as np

    from tuner.spec import SchedulerSpec

    rungs = SchedulerSpec("asha", grace, eta).rungs(max(len(c) for c in curves))
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    best, spent = float("-inf"), 0
    for curve in curves:
        ran = len(curve)
        for r in rungs:
            if r > len(curve):
                break
            value, seen = curve[r - 1], recorded[r]
            cutoff = np.nanpercentile(seen, (1 - 1 / eta) * 100) if seen else None
            seen.append(value)
            if cutoff is not None and value < cutoff:
                ran = r
                break
        best, spent = max(best, max(curve[:ran])), spent + ran
    return best, spent


def promote_replay(curves: list[list[float]], grace: int, eta: int, workers: int = 2,
                   brackets: int = 1) -> tuple[float, int]:
    """ASHA with promotions (tuner/schedulers.py, its own `Rungs` bookkeeping and bracket plan) replayed
    on full-length curves: `workers` slots, every epoch one time unit, trials started in order; a free
    slot takes a promotion (highest epoch first) before a new trial. Returns (best value seen,
    trial-epochs spent)."""
    from tuner.schedulers import make_brackets
    from tuner.spec import SchedulerSpec

    ms = SchedulerSpec("asha_promote", grace, eta).rungs(max(len(c) for c in curves))
    plan, per, ladder = make_brackets(ms, eta, len(curves), brackets)

    def until(i: int, epoch: int) -> int:  # where trial i, now at `epoch`, stops next
        return next((m for m in per[plan[i]].milestones if epoch < m < len(curves[i])), len(curves[i]))

    def next_promotion() -> tuple[int, int] | None:  # (trial, its bracket's rung) at the highest epoch
        return next(((int(p[0]), k) for s, k in ladder for p in [per[s].promotable(k)] if p), None)

    clock, running, started, best, spent = 0, [], 0, float("-inf"), 0  # running: (end time, trial, from epoch)
    while True:
        while len(running) < workers:
            job = next_promotion()
            if job is not None:
                rungs = per[plan[job[0]]]
                rungs.promote(job[1], str(job[0]))
                job = (job[0], rungs.milestones[job[1]])
            elif started < len(curves):
                job, started = (started, 0), started + 1
            else:
                break
            running.append((clock + until(*job) - job[1], *job))
        if not running:
            return best, spent
        running.sort()
        clock, i, epoch = running.pop(0)
        to = until(i, epoch)
        spent, best = spent + to - epoch, max(best, max(curves[i][:to]))
        rungs = per[plan[i]]
        k = rungs.index(to)
        if k is not None and to < len(curves[i]):
            rungs.record(k, str(i), curves[i][to - 1])
            if str(i) in rungs.promotable(k):  # inside the quota on arrival: goes on without a pause
                rungs.promote(k, str(i))
                running.append((clock + until(i, to) - to, i, to))


def pruner_replay(curves: list[list[float]], pruner) -> tuple[float, int]:
    """An Optuna pruner replayed on full-length curves: one worker, trials in order, each reporting its
    epochs to an in-memory study and stopping where `should_prune()` says so (PRUNED), else COMPLETE.
    Returns (best value seen, trial-epochs spent)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name="replay")
    best, spent = float("-inf"), 0
    for curve in curves:
        trial, ran = study.ask(), len(curve)
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if epoch < len(curve) and trial.should_prune():
                ran = epoch
                break
        best, spent = max(best, max(curve[:ran])), spent + ran
        if ran < len(curve):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, max(curve))  # what the sweep tells Optuna: the trial's best epoch
    return best, spent


def optuna_pruners(max_t: int) -> list[tuple[str, Any]]:
    """Optuna's own pruners, as a user would set them for a max_t-epoch sweep (defaults, and SHA at our rungs)."""
    import optuna

    p = optuna.pruners
    return [("MedianPruner() (defaults: 5 start-up trials)", p.MedianPruner()),
            ("PercentilePruner(25.0, n_startup_trials=5)", p.PercentilePruner(25.0, n_startup_trials=5)),
            ("SuccessiveHalvingPruner() (rungs 1, 4, 16)", p.SuccessiveHalvingPruner(min_resource=1)),
            ("SuccessiveHalvingPruner(min_resource=2, reduction_factor=3) (rungs 2, 6, 18)",
             p.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)),
            (f"HyperbandPruner(1, {max_t}, 3) (defaults)", p.HyperbandPruner(min_resource=1, max_resource=max_t))]


def stored_curves(rows: list[dict]) -> tuple[list[dict], list[list[list[float]]]]:
    """The repeats whose random search stored every trial's curve, and those curves in trial order (a
    search with a curve missing, a JSON from before curves were stored, would replay to the wrong best)."""
    rows = [row for row in rows if row.get("random_curves") and len(row["random_curves"]) == len(row["random_trials"])]
    return rows, [[row["random_curves"][k] for k in sorted(row["random_curves"], key=int)] for row in rows]


def cell(best: float, spent: int, curves: list[list[float]]) -> str:
    """A replay's table cell: best kept / the search's best, trial-epochs spent / the search's."""
    return f"{best / max(max(c) for c in curves):.3f}, {spent / sum(len(c) for c in curves):.3f}"


def pruner_rows(rows: list[dict]) -> str:
    """For every repeat with stored curves: each of Optuna's pruners replayed on its random search
    (random proposals, one worker): best / random best, and trial-epochs / random's."""
    rows, per_repeat = stored_curves(rows)
    if not rows:
        return ""
    max_t = max(len(c) for curves in per_repeat for c in curves)
    lines = ["| Optuna pruner | " + " | ".join(f"r{row['repeat']} ratio, fraction" for row in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for i, (name, _) in enumerate(optuna_pruners(max_t)):
        # a fresh pruner per search: Hyperband keeps state
        cells = [cell(*pruner_replay(curves, optuna_pruners(max_t)[i][1]), curves) for curves in per_repeat]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replay_table(path: str) -> str:
    with open(path) as fh:
        rows = json.load(fh)["rows"]
    asha = replay_rows(rows)
    if not asha:
        return f"{path}: no repeat has random_curves (run the sweeps with this version first)"
    return (asha + "\n\n`asha_promote` with Hyperband's brackets (`scheduler.brackets`, tuner/schedulers.py's plan) on the "
            "same curves:\n\n" + bracket_rows(rows)
            + "\n\nOptuna's own pruners on the same curves (one worker, trials in order):\n\n" + pruner_rows(rows))


def bracket_rows(rows: list[dict]) -> str:
    """asha_promote with 2 or more brackets, where the schedule has that many rungs: best / random best,
    and trial-epochs / full budget, as replay_rows."""
    rows, per_repeat = stored_curves(rows)
    from tuner.spec import SchedulerSpec

    max_t = max(len(c) for curves in per_repeat for c in curves)
    lines = ["| grace | reduction | brackets | rungs | " + " | ".join(f"r{row['repeat']} ratio, fraction" for row in rows)
             + " |", "|---|---|---|---|" + "---|" * len(rows)]
    for grace in (1, 2):
        for eta in (2, 3, 4):
            rungs = SchedulerSpec("asha_promote", grace, eta).rungs(max_t)
            for b in range(2, len(rungs) + 1):
                cells = [cell(*promote_replay(curves, grace, eta, brackets=b), curves) for curves in per_repeat]
                lines.append(f"| {grace} | {eta} | {b} | {', '.join(map(str, rungs))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replay_rows(rows: list[dict]) -> str:
    """For every repeat with stored curves: both ASHA rules replayed on its random search (the same
    configs, run to full length): best / random best, and trial-epochs / full budget."""
    rows, per_repeat = stored_curves(rows)
    if not rows:
        return ""
    from tuner.spec import SchedulerSpec

    max_t = max(len(c) for curves in per_repeat for c in curves)
    lines = ["| grace | reduction | rule | rungs | " + " | ".join(f"r{row['repeat']} ratio, fraction" for row in rows) + " |",
             "|---|---|---|---|" + "---|" * len(rows)]
    for grace in (1, 2, 3, 4, 6):
        for eta in (2, 3, 4):
            for rule, replay in (("asha", asha_replay), ("asha_promote", promote_replay)):
                cells = [cell(*replay(curves, grace, eta), curves) for curves in per_repeat]
                rungs = SchedulerSpec(rule, grace, eta).rungs(max_t)
                lines.append(f"| {grace} | {eta} | {rule} | {', '.join(map(str, rungs)) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


VARIANTS_HEAD = """# Search efficiency: every stored variant, repeat by repeat

No sweeps: one row per result file in this folder (`search_efficiency*.json`, smoke tests left out), read as
stored. A cell is ASHA+TPE's best validation NDCG@10 / random search's best in that repeat, then its trial-epochs /
random's in percent; targets: >= 0.98 and <= 35% in each of 5 repeats. Knobs: the ASHA+TPE arm's `--set`
overrides of bpr.yaml (the random arm is bpr.yaml's random search, FIFO, full length); samples: trials ASHA+TPE ran (a range where its repeats differ) / random's.
A repeat missing from a row was not run, or was stopped before its end (docs/search_efficiency.md says which).
Rows: most repeats meeting both targets first.

Regenerate: `python benchmarks/search_efficiency.py --variants`
"""


def variants_table(folder: str) -> str | None:
    """Every stored result file's repeats side by side, so the variants can be compared repeat for repeat
    (None when the folder holds no result; ValueError naming the file when one is not a result of this script)."""
    import glob

    entries = []
    for path in sorted(glob.glob(os.path.join(folder, "search_efficiency*.json"))):
        try:
            with open(path) as fh:
                rec = json.load(fh)
            if rec.get("smoke_test") or not rec.get("rows"):
                continue
            rows = {row["repeat"]: row for row in rec["rows"]}
            met = sum(row["ratio_met"] and row["epoch_fraction_met"] for row in rows.values())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a search_efficiency.py result ({type(e).__name__}: {e})") from None
        entries.append((os.path.basename(path)[:-5], rec, rows, met))
    if not entries:
        return None
    entries.sort(key=lambda e: (-e[3], -len(e[2]), -min(row["ratio"] for row in e[2].values()), e[0]))
    top = max([r for _, _, rows, _ in entries for r in rows] + [4])
    lines = [VARIANTS_HEAD, "| result | samples | scheduler | knobs | "
             + " | ".join(f"r{r}" for r in range(top + 1)) + " | both met | worst ratio | mean ratio |",
             "|---" * (top + 8) + "|"]
    shown = ("scheduler.grace_period", "scheduler.reduction_factor", "search.samples")  # in their own columns
    for name, rec, rows, met in entries:
        first = next(iter(rows.values()))
        knobs = ", ".join(f"{k.split('.', 1)[1]}={str(v).lower() if isinstance(v, bool) else v}"
                          for k, v in (rec.get("asha_overrides") or {}).items() if k not in shown)
        if rec.get("stop_at_target"):
            knobs += f", stopped at {RATIO_TARGET} x random's best"
        ran = sorted({len(row.get("asha_trials") or []) for row in rows.values()})  # budgeted sweeps differ
        samples = ((f"{ran[0]}" if len(ran) == 1 else f"{ran[0]}-{ran[-1]}") + f"/{len(first['random_trials'])}"
                   if ran[0] and first.get("random_trials") else "not recorded")
        scheduler = rec.get("scheduler", "not recorded").split(", rungs")[0]
        cells = [f"{rows[r]['ratio']:.3f} ({rows[r]['epoch_fraction']:.0%})" if r in rows else "-"
                 for r in range(top + 1)]
        ratios = [row["ratio"] for row in rows.values()]
        lines.append(f"| `{name}` | {samples} | {scheduler} | {knobs or '-'} | " + " | ".join(cells)
                     + f" | {met} of {len(rows)} | {min(ratios):.3f} | {sum(ratios) / len(ratios):.3f} |")
    full = [name for name, _, rows, met in entries if met == len(rows) >= 5]
    lines += ["", "Both targets met in each of 5 or more repeats: "
              + (", ".join(f"`{n}`" for n in full) if full else "**none** of the variants stored") + "."]
    return "\n".join(lines) + "\n"


def compare(r: int, asha: dict, rand: dict) -> dict:
    ratio, frac = asha["best"] / rand["best"], asha["epochs"] / rand["epochs"]
    return {
        "repeat": r, "search_seed": r,
        "asha_best": asha["best"], "random_best": rand["best"], "ratio": ratio, "ratio_met": ratio >= RATIO_TARGET,
        "asha_epochs": asha["epochs"], "random_epochs": rand["epochs"], "full_budget": rand["full_budget"],
        "epoch_fraction": frac, "epoch_fraction_met": frac <= EPOCHS_TARGET,
        "asha_wall_seconds": asha["wall_seconds"], "random_wall_seconds": rand["wall_seconds"],
        "asha_best_config": asha["best_config"], "random_best_config": rand["best_config"],
        "asha_status_counts": asha["status_counts"], "random_status_counts": rand["status_counts"],
        "asha_trials": asha["trials"], "random_trials": rand["trials"],
        "asha_curves": asha["curves"], "random_curves": rand["curves"],
        "random_reused_from": rand.get("reused_from"),
    }


def merge_rows(path: str, rows: list[dict]) -> tuple[list[dict], list[int]]:
    """`rows` merged into the JSON at `path` (if any): its rows for the other repeats are kept, so runs of
    different repeats into one file may finish in any order; returns the rows by repeat and the kept repeats."""
    if not os.path.isfile(path):
        return rows, []
    ran = {row["repeat"] for row in rows}
    with open(path) as fh:
        kept = [row for row in json.load(fh)["rows"] if row["repeat"] not in ran]
    return sorted(kept + rows, key=lambda row: row["repeat"]), [row["repeat"] for row in kept]


def summarize(rows: list[dict], args, load_start, kept: list[int] = ()) -> dict:
    def mean(key):
        return sum(row[key] for row in rows) / len(rows)

    n = len(rows)
    ratios, fracs = [row["ratio"] for row in rows], [row["epoch_fraction"] for row in rows]
    summary = {
        "repeats": n, "mean_ratio": mean("ratio"), "mean_epoch_fraction": mean("epoch_fraction"),
        "mean_asha_best": mean("asha_best"), "mean_random_best": mean("random_best"),
        "mean_asha_wall_seconds": mean("asha_wall_seconds"), "mean_random_wall_seconds": mean("random_wall_seconds"),
        "ratio_met_every_repeat": all(row["ratio_met"] for row in rows),
        "epoch_fraction_met_every_repeat": all(row["epoch_fraction_met"] for row in rows),
    }
    label = f"{n} repeat" + ("s" if n != 1 else "")
    return {
        "benchmark": "search_efficiency", "smoke_test": args.smoke_test,
        "data": "bpr.yaml's synthetic generator, 500 users x 200 items" if args.smoke_test else os.path.relpath(os.path.abspath(args.data), ROOT),
        "spec": "search_spaces/bpr.yaml", "scheduler": scheduler_of_spec(args.overrides, args.smoke_test), "asha_overrides": args.overrides,
        "stop_at_target": bool(getattr(args, "stop_at_target", False)),
        "protocol": "ASHA+TPE (spec unchanged but data, search.seed=r) vs random/fifo/diagnose off (full length)",
        "command": command_of(args)
                   + (f" (merged with the earlier JSON's repeats {', '.join(map(str, sorted(kept)))})" if kept else ""),
        "cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "rows": rows, "summary": summary,
        "figures": [
            {"name": f"ASHA+TPE best val NDCG@10 / random search best ({label})", "value": summary["mean_ratio"],
             "values": ratios, "target": f">= {RATIO_TARGET}", "met": summary["ratio_met_every_repeat"],
             "unit": "ratio"},
            {"name": "ASHA+TPE trial-epochs / random search trial-epochs", "value": summary["mean_epoch_fraction"],
             "values": fracs, "target": f"<= {EPOCHS_TARGET}", "met": summary["epoch_fraction_met_every_repeat"],
             "unit": "ratio"},
        ],
    }


def command_of(args, repeat: int | None = None) -> str:
    """The command line that runs these sweeps again; with `repeat`, that repeat alone (each row keeps its
    own, since repeats merged into one JSON may come from runs with other flags)."""
    first, n = (args.first_repeat or 0, args.repeats) if repeat is None else (repeat, 1)
    return ("python benchmarks/search_efficiency.py" + (" --smoke-test" if args.smoke_test else f" --repeats {n}")
            + (f" --first-repeat {first}" if first else "")
            + (f" --reuse-random {args.reuse_random}" if args.reuse_random else "")
            + (f" --extend-random {args.extend_random}" if args.extend_random else "")
            + (f" --samples {args.samples}" if args.samples is not None else "")
            + (" --stop-at-target" if getattr(args, "stop_at_target", False) else "")
            + "".join(f" --set {s}" for s in args.set) + (f" --tag {args.tag}" if args.tag else ""))


def scheduler_of_spec(overrides: dict | None = None, smoke_test: bool = False) -> str:
    """The ASHA + TPE arm's scheduler: bpr.yaml's, after the arm's --set overrides (and the smoke test's
    epochs, which move the rungs)."""
    from tuner import spec as specmod

    keep = {k: v for k, v in (overrides or {}).items() if k.startswith(("scheduler.", "fixed.epochs"))}
    spec = specmod.load(SPEC, {**(SMOKE if smoke_test else {}), **keep})
    sch = spec.scheduler
    return (f"{sch.type}, grace {sch.grace_period}, reduction {sch.reduction_factor:g}, rungs at epochs "
            f"{', '.join(map(str, sch.rungs(spec.max_epochs()))) or '-'}")


def markdown(rec: dict) -> str:
    s = rec["summary"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        f"# Search efficiency: ASHA + TPE vs random search run to full length ({rec['data']})",
        "",
        f"Command: `{rec['command']}` ({rec['cpu_count']} cores; load average at start "
        f"{rec['loadavg_start'][0]:.2f}, at end {rec['loadavg_end'][0]:.2f}). ASHA+TPE arm's scheduler: "
        f"{rec.get('scheduler', 'not recorded')}"
        + (f" (bpr.yaml with {', '.join(f'{k}={v}' for k, v in rec['asha_overrides'].items())})"
           if rec.get("asha_overrides") else "") + ". Best = best validation NDCG@10 over "
        "all trials and epochs; epochs = trial-epochs spent (sum of epochs_run).",
        "",
        "| repeat | ASHA+TPE best | random best | ratio (>= 0.98) | ASHA epochs | random epochs | fraction (<= 0.35) "
        "| ASHA wall s | random wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rec["rows"]:
        lines.append(f"| {row['repeat']} | {row['asha_best']:.4f} | {row['random_best']:.4f} | {row['ratio']:.3f} "
                     f"| {row['asha_epochs']} | {row['random_epochs']} | {row['epoch_fraction']:.3f} "
                     f"| {row['asha_wall_seconds']:.0f} | {row['random_wall_seconds']:.0f} |")
    lines += [
        f"| mean | {s['mean_asha_best']:.4f} | {s['mean_random_best']:.4f} | {s['mean_ratio']:.3f} | | "
        f"| {s['mean_epoch_fraction']:.3f} | {s['mean_asha_wall_seconds']:.0f} | {s['mean_random_wall_seconds']:.0f} |",
        "",
        f"Ratio target met in every repeat: {yes[s['ratio_met_every_repeat']]}. "
        f"Epoch-fraction target met in every repeat: {yes[s['epoch_fraction_met_every_repeat']]}.",
        "",
    ]
    replay = replay_rows(rec["rows"])
    if replay:
        lines += ["ASHA schedules replayed on each random search's full-length curves (`--replay`), random "
                  "sampling rather than TPE: `asha` is Ray's rung rule with trials arriving in order (the first "
                  "arrival at a rung always continues); `asha_promote` is tuner/schedulers.py's promotion rule on "
                  "2 workers, one time unit per epoch. Cells: best / random best, trial-epochs / random's:",
                  "", replay, ""]
    reused = sorted({row["random_reused_from"] for row in rec["rows"] if row.get("random_reused_from")})
    if reused:
        lines += [f"Random searches reused from {', '.join(reused)} (same space and seeds; ASHA settings do not "
                  "affect a FIFO sweep), so their wall times are from that run"
                  + (" (plus the added draws' sweep, run here)" if any(" + " in f for f in reused) else "") + ".", ""]
    if any(row.get("command") for row in rec["rows"]):  # merged runs: each repeat's own command
        lines += ["Each repeat's command:", ""] + [f"- repeat {row['repeat']}: `{row['command']}`"
                                                   for row in rec["rows"] if row.get("command")] + [""]
    for row in rec["rows"]:
        lines.append(f"- repeat {row['repeat']}: ASHA+TPE best config `{json.dumps(row['asha_best_config'], default=str)}`; "
                     f"random best config `{json.dumps(row['random_best_config'], default=str)}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import entry

    raise SystemExit(entry.run(main, "benchmarks/search_efficiency.py"))
