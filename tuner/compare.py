"""`tuner compare`: two fixed configurations x N seeds as Ray Tune trials, a paired verdict per metric.

A claim file (search_spaces/claims/*.yaml) names a base spec and the two variants as dotted
overrides of it:

    claim: "seed 000: a learnable logit scale beats a fixed scale of 1"
    spec: ../two_tower.yaml          # relative to the claim file; its `space` is ignored
    a: {name: fixed-1, set: {fixed.logit_scale: 1.0, fixed.learn_logit_scale: false}}
    b: {name: learnable-10, set: {fixed.logit_scale: 10.0, fixed.learn_logit_scale: true}}
    seeds: 5
    metrics: [test_ndcg_10, test_hr_10]
    patience: 3                      # optional, 1..1000: stop a seed's run once the base spec's metric
                                     # has not improved for 3 epochs (`epochs` is then the cap)

`tuner compare A.yaml B.yaml --seeds N` compares two spec files the same way. Each trial's test
metrics come from its best-validation checkpoint, computed on the driver after the sweep; seed s of
A is paired with seed s of B (same data, same initialisation seed). `train_loss_jitter` (mean
absolute second difference of the train-loss curve, lower = smoother) measures "more stable".
Beside each verdict (the 95% t-interval excludes 0) come the paired t, Wilcoxon and sign-test
p-values and the seeds needed for 80% power (analysis/stats.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from ray import tune

from analysis.stats import Row, compare, markdown_table, verdict_lines
from tuner.trainable import train as train_one
from tuner import checkpoints
from tuner import spec as specmod
from tuner import finish, pipeline, progress, sweep, tracking
from trainables.errors import TunerError, where
from tuner.spec import Spec
from tuner.stopper import PatienceStopper

DEFAULT_METRICS = ("test_ndcg_10", "test_hr_10")
MAX_PATIENCE = 1000


@dataclass(frozen=True)
class Variant:
    name: str
    spec: Spec  # fixed configuration: space dropped


@dataclass(frozen=True)
class Claim:
    path: str
    claim: str
    a: Variant
    b: Variant
    seeds: int = 3
    metrics: tuple[str, ...] = DEFAULT_METRICS
    patience: int | None = None  # early stopping on the base spec's metric; None: every epoch runs


@dataclass
class CompareResult:
    rows: list[Row]
    markdown: str
    per_seed: dict[str, dict[int, dict[str, float]]]
    out_dir: str
    wall_seconds: float
    parent_run_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def _fixed(spec: Spec) -> Spec:
    return spec.replace(space=())


def load_claim(path: str, smoke: bool = False) -> Claim:
    from trainables import yamlio

    raw = yamlio.parse_text(yamlio.read_text(path, what="claim file"), path)  # the spec files' strict reader
    allowed = {"claim", "spec", "a", "b", "seeds", "metrics", "patience"}
    if not isinstance(raw, dict) or not {"spec", "a", "b"} <= set(raw):
        raise TunerError(f"{path}: a claim file needs spec, a and b (see tuner/compare.py)")
    for k in raw:
        if k not in allowed:
            raise TunerError(f"{where(path, k)}: unknown key; valid keys: {', '.join(sorted(allowed))}")
    base = yamlio.beside(path, raw["spec"])

    def variant(key: str) -> Variant:
        body = raw[key]
        if not isinstance(body, dict) or not set(body) <= {"name", "set"}:
            raise TunerError(f"{where(path, key)}: expected {{name: ..., set: {{dotted.key: value}}}}")
        # the base spec's search space is dropped first, so `set` may fix any knob it searched
        spec = specmod.load(base, {"space": {}, **(body.get("set") or {})})
        spec = specmod.smoke(spec) if smoke else spec
        return Variant(str(body.get("name", key.upper())), _fixed(spec))

    seeds = raw.get("seeds", 3)
    if not isinstance(seeds, int) or seeds < 1:
        raise TunerError(f"{where(path, 'seeds')}: expected a positive integer, got {seeds!r}")
    metrics = tuple(raw.get("metrics") or DEFAULT_METRICS)
    patience = raw.get("patience")
    if patience is not None and (type(patience) is not int or not 1 <= patience <= MAX_PATIENCE):
        raise TunerError(f"{where(path, 'patience', _line_of(path, 'patience'))}: expected an integer "
                         f"1..{MAX_PATIENCE} (epochs without improvement before a run stops), got {patience!r}"[:300])
    return Claim(path, str(raw.get("claim", "")), variant("a"), variant("b"), 2 if smoke else seeds, metrics,
                 patience)


def _line_of(path: str, key: str) -> int | None:
    """The line of a top-level key in a (valid, already parsed) YAML file, for error messages."""
    from trainables import yamlio

    root = yamlio.compose(yamlio.read_text(path, what="claim file"))
    for k, _ in getattr(root, "value", None) or []:
        if getattr(k, "value", None) == key:
            return k.start_mark.line + 1
    return None


def from_specs(a_path: str, b_path: str | None, seeds: int, b_overrides: Mapping[str, Any] | None = None,
               smoke: bool = False) -> Claim:
    """A vs B spec files, or a base spec (A) vs the same spec with `b_overrides` (B)."""
    a = specmod.load(a_path)
    b = specmod.load(b_path or a_path, b_overrides or {})
    if smoke:
        a, b = specmod.smoke(a), specmod.smoke(b)
    b_name = os.path.splitext(os.path.basename(b_path))[0] if b_path else \
        " ".join(f"{k}={v}" for k, v in (b_overrides or {}).items())
    metrics = (f"test_{a.metric.name.removeprefix('val_')}",)  # the spec's tuning metric, on test
    metrics += tuple(f"test_{m}" for m in (a.model_entry().headline((10,)) or [])[:1])  # hr_10 for ranking
    return Claim(a_path, "", Variant(os.path.splitext(os.path.basename(a_path))[0], _fixed(a)),
                 Variant(b_name or "B", _fixed(b)), 2 if smoke else seeds, tuple(dict.fromkeys(metrics)))


class VariantEpochs:
    """trial config {variant, seed} -> planned epochs (picklable for Ray)."""

    def __init__(self, variants: Mapping[str, Mapping[str, Any]]):
        self.epochs = {k: int(v["config"].get("epochs", sweep.epochs_counter(v["spec"])({}))) for k, v in variants.items()}

    def __call__(self, config: Mapping[str, Any]) -> int:
        return self.epochs[config["variant"]]


def train_variant(config: dict[str, Any], *, data, variants, ks, batch_users, use_gpu):
    """Ray trainable: run variant config['variant'] with seed config['seed']."""
    v = variants[config["variant"]]
    train_one({**v["config"], "seed": config["seed"]}, data=data, model=v["model"], ks=ks,
              batch_users=batch_users, use_gpu=use_gpu)


def _jitter(losses: np.ndarray) -> float:
    """Mean |second difference| of the train-loss curve: 0 for a straight line, large for zig-zags."""
    return float(np.abs(np.diff(losses, n=2)).mean()) if len(losses) >= 3 else float("nan")


def run(claim: Claim, *, output: str = "runs", address: str | None = None, verbose: int = 0,
        concurrency: int | None = None) -> CompareResult:
    t0 = time.time()
    a, b = claim.a.spec, claim.b.spec
    if a.data != b.data or a.data_path != b.data_path or a.eval != b.eval:
        raise TunerError(f"{claim.path}: A and B must use the same data and eval sections to be paired")
    data = a.model_entry().dataset(a)
    variants = {
        "A": {"model": a.model, "config": dict(a.fixed), "spec": a},
        "B": {"model": b.model, "config": dict(b.fixed), "spec": b},
    }
    session = pipeline.connect(a, uri=a.tracking.uri or tracking.default_uri(output), output=output,
                               experiment="compare", address=address, verbose=verbose)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    title = os.path.splitext(os.path.basename(claim.path))[0]
    out_dir, pid = pipeline.open_parent(  # -2, -3 for two compares in one second
        session, output, f"compare-{title}-{stamp}", f"{claim.a.name} vs {claim.b.name} ({claim.seeds} seeds)",
        lambda _dir: {"tuner.role": "compare", "claim": claim.claim[:500], "model": a.model,
                      "dataset": data.name, "spec": os.path.basename(claim.path), "status": "running"})
    client = session.client
    client.log_batch(pid, params=[Param(f"{side}.{k}", str(v)[:500]) for side, var in (("A", a), ("B", b))
                                  for k, v in var.fixed.items()] + [Param("seeds", str(claim.seeds)),
                                                                    Param("patience", str(claim.patience))])
    client.log_artifact(pid, claim.path)

    epochs_of = VariantEpochs(variants)  # planned epochs per trial: MLflow's statuses and the progress line
    stopper = PatienceStopper(a.metric.name, a.metric.mode, claim.patience) if claim.patience else None
    runs_cb = tracking.TrialRuns(session.uri, session.exp_id, pid, model=a.model, dataset=data.name,
                                 spec_file=claim.path, searched=("variant", "seed"), epochs_of=epochs_of,
                                 early_stopper=f"patience {claim.patience}: {a.metric.name} stopped improving"
                                 if stopper else "")
    slim = {k: {"model": v["model"], "config": v["config"]} for k, v in variants.items()}
    tuner = pipeline.make_tuner(
        pipeline.trainable(train_variant, a, data, variants=slim), a, out_dir,
        param_space={"variant": tune.grid_search(["A", "B"]), "seed": tune.grid_search(list(range(claim.seeds)))},
        samples=1, concurrency=concurrency or a.search.concurrency, verbose=verbose, keep=1,
        # the live lines of `tuner run` (default verbosity): a claim of 10 runs can take an hour
        callbacks=[runs_cb, *progress.callbacks(verbose, a.metric.name, a.metric.mode, 2 * claim.seeds, runs_cb,
                                                epochs_of)],
        stop=stopper)  # keep=1 ranked by the metric: the best-validation checkpoint survives early stopping
    status = "failed"
    try:
        per_seed = _per_seed(tuner.fit(), variants, data)
        status = "completed"
    finally:
        runs_cb.close_running()
        if status != "completed":
            client.set_tag(pid, "status", status)
            client.set_terminated(pid, "FAILED")
    return _conclude(claim, per_seed, out_dir, client, pid, data.name, t0)


def _per_seed(grid, variants: Mapping[str, Mapping[str, Any]], data) -> dict[str, dict[int, dict[str, float]]]:
    """side -> seed -> values: best-epoch validation metrics, loss stability and, from the best intact
    checkpoint, test metrics (computed here, on the driver)."""
    per_seed: dict[str, dict[int, dict[str, float]]] = {"A": {}, "B": {}}
    for r in grid:
        side, seed = r.config["variant"], r.config["seed"]
        spec = variants[side]["spec"]
        values: dict[str, float] = {}
        if r.error is None and r.metrics_dataframe is not None and spec.metric.name in r.metrics_dataframe:
            hist = r.metrics_dataframe
            best = hist[spec.metric.name].idxmax() if spec.metric.mode == "max" else hist[spec.metric.name].idxmin()
            values.update({k: float(hist.loc[best, k]) for k in hist.columns if str(k).startswith("val_")})
            values["train_loss_jitter"] = _jitter(hist["train_loss"].to_numpy())
            values["final_train_loss"] = float(hist["train_loss"].iloc[-1])
            values["epochs_run"] = float(hist["epoch"].max()) if "epoch" in hist else float(len(hist))
            values["best_epoch"] = float(hist.loc[best, "epoch"]) if "epoch" in hist else float("nan")
            ckpt = r.get_best_checkpoint(spec.metric.name, spec.metric.mode)
            state, _ = checkpoints.load_with_fallback(ckpt, "cpu")  # verified; else an earlier one
            cfg = {**variants[side]["config"], "seed": seed}
            if state is not None:  # no intact checkpoint: the seed has validation values only
                values["test_epoch"] = float(state.get("epoch", float("nan")))  # == best_epoch unless it fell back
                test = finish.evaluate_state(spec, cfg, data, state, "test")
                values.update({f"test_{k}": v for k, v in test.items()})
        per_seed[side][seed] = values
    return per_seed


def _conclude(claim: Claim, per_seed, out_dir: str, client, pid: str, dataset: str, t0: float) -> CompareResult:
    """The paired verdicts: compare.md / compare.json, and the parent run's metrics, tags and artifacts."""
    metrics = list(claim.metrics)
    modes = {m: ("min" if ("loss" in m or "jitter" in m) else "max") for m in metrics}
    rows = compare(per_seed["A"], per_seed["B"], metrics, modes)
    wall = time.time() - t0
    md = f"{markdown_table(rows, claim.a.name, claim.b.name)}\n\n{verdict_lines(rows)}"
    if claim.patience:
        md += f"\n\n{_epochs_line(claim, per_seed)}"
    header = f"**{claim.claim}**\n\n" if claim.claim else ""
    with open(os.path.join(out_dir, "compare.md"), "w") as fh:
        fh.write(f"{header}{md}\n\n{claim.seeds} seeds per side, {wall:.0f} s, data {dataset}\n")
    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump({"claim": claim.claim, "a": claim.a.name, "b": claim.b.name, "seeds": claim.seeds,
                   "patience": claim.patience, "rows": [r.__dict__ for r in rows], "per_seed": per_seed,
                   "wall_seconds": wall, "dataset": dataset}, fh, indent=2, default=str)
    now = int(time.time() * 1000)
    client.log_batch(pid, metrics=[Metric(f"{k}_{r.metric}", v, now, 0) for r in rows
                                   for k, v in (("diff", r.diff), ("ci_low", r.ci_low), ("ci_high", r.ci_high),
                                                ("p_t", r.p_t), ("p_wilcoxon", r.p_wilcoxon), ("p_sign", r.p_sign),
                                                ("n_power", r.n_power))
                                   if np.isfinite(v)] + [Metric("wall_seconds", wall, now, 0)],
                     tags=[RunTag("status", "completed")] + [RunTag(f"verdict.{r.metric}", r.verdict) for r in rows])
    client.log_artifact(pid, os.path.join(out_dir, "compare.md"))
    client.log_artifact(pid, os.path.join(out_dir, "compare.json"))
    client.set_terminated(pid, "FINISHED")
    return CompareResult(rows, md, per_seed, out_dir, wall, pid, {"dataset": dataset})


def _epochs_line(claim: Claim, per_seed) -> str:
    """'Early stopping: patience 3; epochs run per seed: A 7, 9, 12; B 5, 12, 8 (cap 12 / 12).'"""
    def ran(side: str) -> str:
        return ", ".join(str(int(v["epochs_run"])) if "epochs_run" in v else "–"
                         for _, v in sorted(per_seed[side].items()))

    caps = " / ".join(str(v.spec.max_epochs()) for v in (claim.a, claim.b))
    return (f"Early stopping: patience {claim.patience}; epochs run per seed: {claim.a.name} {ran('A')}; "
            f"{claim.b.name} {ran('B')} (cap {caps}).")
