"""Training pathologies read off one trial's per-epoch history, as plain functions (no Ray).

A history is the list of result dicts a trial reported, oldest first, each with `epoch`,
`train_loss` and the validation metric (e.g. `val_ndcg_10`). Optional keys the checks use:

- `logit_bound`: the largest |logit| the loss can see (s for s * cosine under BCE; report 2s
  for BPR, whose logit is a difference of two scores). BCE with logits in [-s, s] cannot go
  below log(1 + e^-s) = 0.3133 for s = 1: seed 000's "stuck at 0.3133".
- `loss_floor`: the lowest train_loss the model's logit range allows, when the model knows its
  loss's shape better than log(1 + e^-s) (trainables/two_tower.py reports it); preferred.
- `logit_scale`: only quoted in reasons (seed 001's overconfident scale 10).
- `grad_ratio`, or `grad_ratio_<aux>` for several auxiliary losses: ||grad of the main
  (recommendation) loss|| / ||grad of that auxiliary loss||, on the shared parameters. Seed
  002 wants rec_grad : aux_grad > 1; the smallest ratio reported in an epoch is checked.

Checks, first match wins (most urgent, then most specific cause):
diverged, collapsed, stuck, dominated, mismatch. `diagnose` looks at the latest epoch only, so
a stopper can call it after every result; `first_diagnosis` replays a finished history.
`PathologyWatch` applies them to a sweep's results as they arrive; tuner/stopper.py is its Ray Stopper.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

LOSS = "train_loss"


@dataclass(frozen=True)
class DiagnoseConfig:
    """Thresholds (the `diagnose:` section of a spec). An epochs/factor field set to 0 turns its check off."""

    enabled: bool = True
    # stuck: train loss identical (relative tol) over `stuck_epochs` epochs, or that long at the
    # floor log(1 + e^-logit_bound) (within floor_tol, relative).
    stuck_epochs: int = 3
    stuck_tol: float = 1e-4
    floor_tol: float = 0.01
    # collapsed: train loss below `collapse_loss` for `collapse_epochs` epochs while the metric
    # did not improve over them by more than `flat_tol` (relative): seed 001's 0.0001.
    collapse_loss: float = 1e-3
    collapse_epochs: int = 2
    flat_tol: float = 0.01
    # diverged: a non-finite loss or metric, or train loss above `diverge_factor` x its best so far.
    diverge_factor: float = 5.0
    # dominated: grad_ratio below 1 / dominated_factor for `dominated_epochs` epochs in a row.
    dominated_factor: float = 10.0
    dominated_epochs: int = 2
    # mismatch: train loss fell in each of the last `mismatch_epochs` epochs while the metric
    # never beat its first-epoch value by more than `mismatch_gain` (relative): seed 002, where
    # cross-entropy fell 8.99 -> 8.57 over 7 epochs and NDCG@10 only wobbled 0.0066 -> 0.0072.
    # Slow starters (gBCE, see ANCHORS.md) need a larger mismatch_epochs.
    mismatch_epochs: int = 6
    mismatch_gain: float = 0.10
    # A plateau at the top is convergence, not a pathology: the stopper never ends a trial for
    # stuck or mismatch while its best metric so far is within `leader_tol` (relative) of the
    # best any other trial had reached by the same epoch (a sweep's leader was once stopped so).
    leader_tol: float = 0.05


@dataclass(frozen=True)
class Diagnosis:
    name: str  # diverged | collapsed | stuck | dominated | mismatch
    reason: str  # one line for people: what was seen, and what usually causes it
    epoch: int = 0

    def __str__(self) -> str:  # the form used for the stop_reason tag
        return f"{self.name}: {self.reason}"


def _num(v: Any) -> float | None:
    """A number as float (numpy scalars too); None for bools, strings, dicts, None."""
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) else None


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [x for x in (_num(r.get(key)) for r in history) if x is not None]


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


def _gain(first: float, best: float, mode: str) -> float:
    """Relative improvement of `best` over `first` in the metric's direction (inf from 0)."""
    up = best - first if mode == "max" else first - best
    if up <= 0:
        return 0.0
    return up / abs(first) if first != 0 else math.inf


def _best(xs: Sequence[float], mode: str) -> float:
    return max(xs) if mode == "max" else min(xs)


# -- the checks: each returns a reason string or None ------------------------------------------
def _diverged(loss: list[float], vals: list[float], metric: str, cfg: DiagnoseConfig) -> str | None:
    if loss and not math.isfinite(loss[-1]):
        return f"train_loss is {loss[-1]}: lower the learning rate or clip gradients"
    if vals and not math.isfinite(vals[-1]):
        return f"{metric} is {vals[-1]}: the model produces non-finite scores"
    if cfg.diverge_factor > 0 and len(loss) >= 2:
        best = min(loss[:-1])
        if best > 0 and loss[-1] > cfg.diverge_factor * best:  # a negative best has no scale
            return (f"train_loss {loss[-1]:.4g} is {loss[-1] / best:.1f}x its best {best:.4g}: "
                    f"lower the learning rate or clip gradients")
    return None


def _collapsed(loss: list[float], vals: list[float], metric: str, mode: str, last: Mapping[str, Any],
               cfg: DiagnoseConfig) -> str | None:
    n = cfg.collapse_epochs
    if n <= 0 or len(loss) < n or len(vals) < n + 1 or not all(x < cfg.collapse_loss for x in loss[-n:]):
        return None
    before, window = vals[-n - 1], vals[-n:]
    if _gain(before, _best(window, mode), mode) > cfg.flat_tol:
        return None  # the metric still improves: a low loss alone is fine
    scale = _num(last.get("logit_scale"))
    hint = f", logit_scale {scale:.3g}" if scale is not None else ""
    return (f"train_loss {loss[-1]:.2g} < {cfg.collapse_loss:g} for {n} epochs while {metric} stayed "
            f"{before:.4g} -> {vals[-1]:.4g}{hint}: the task is too easy (more or harder negatives, "
            f"smaller logit scale)")


def _floor(row: Mapping[str, Any]) -> float | None:
    """The lowest train_loss the logit range allows: a reported `loss_floor` (the model knows its
    loss's shape), else log(1 + e^-s) for BCE with logits in [-s, s] (0.3133 for s = 1)."""
    f = _num(row.get("loss_floor"))
    if f is not None:
        return f
    s = _num(row.get("logit_bound"))
    return math.log1p(math.exp(-s)) if s is not None and s > 0 else None


def _stuck(history: Sequence[Mapping[str, Any]], loss: list[float], cfg: DiagnoseConfig) -> str | None:
    n = cfg.stuck_epochs
    if n <= 0 or len(loss) < n:
        return None
    window = loss[-n:]
    rows = history[-n:]  # a learnable bound moves, so each epoch is held to its own floor
    floors = [_floor(r) for r in rows]
    if all(f is not None and (x := _num(r.get(LOSS))) is not None and x <= f * (1 + cfg.floor_tol)
           for f, r in zip(floors, rows)):
        bound = _num(rows[-1].get("logit_bound"))
        what = f"logits bounded by {bound:.3g}" if bound is not None else "this logit range"
        return (f"train_loss {loss[-1]:.4f} has sat for {n} epochs at its floor {floors[-1]:.4f}, "
                f"the lowest loss {what} allow: scale the logits (learnable logit scale, seed 000)")
    if all(_close(x, window[0], cfg.stuck_tol) for x in window):
        return (f"train_loss {loss[-1]:.6g} unchanged for {n} epochs: nothing is learning "
                f"(bounded logits, zero learning rate, detached graph)")
    return None


def _dominated(history: Sequence[Mapping[str, Any]], cfg: DiagnoseConfig) -> str | None:
    n = cfg.dominated_epochs
    if n <= 0 or cfg.dominated_factor <= 0 or len(history) < n:
        return None
    worst = []  # per epoch: (smallest ratio, its key)
    for r in history[-n:]:
        ratios = [(v, k) for k in r if k == "grad_ratio" or k.startswith("grad_ratio_")
                  if (v := _num(r[k])) is not None]
        if not ratios:
            return None
        worst.append(min(ratios))
    if all(v < 1.0 / cfg.dominated_factor for v, _ in worst):
        v, k = worst[-1]
        aux = k.removeprefix("grad_ratio").lstrip("_") or "auxiliary"
        return (f"{k} = {v:.3g} for {n} epochs: the {aux} loss's gradient is {1 / v:.0f}x the recommendation "
                f"loss's; lower its weight (seed 002)") if v > 0 else f"{k} = {v:.3g}: no recommendation gradient"
    return None


def _mismatch(loss: list[float], vals: list[float], metric: str, mode: str, cfg: DiagnoseConfig,
              reference: float | None = None) -> str | None:
    n = cfg.mismatch_epochs
    if n <= 0 or len(loss) < n + 1 or len(vals) < n + 1:
        return None
    recent = loss[-n - 1:]
    if not all(b < a and not _close(a, b, cfg.stuck_tol) for a, b in zip(recent, recent[1:])):
        return None
    if reference is not None:  # seed 002: the metric stalls near the popularity baseline
        if _gain(reference, _best(vals, mode), mode) > cfg.mismatch_gain:
            return None
        return (f"train_loss fell {n} epochs in a row ({recent[0]:.4g} -> {recent[-1]:.4g}) while {metric} stayed "
                f"within {cfg.mismatch_gain:.0%} of the popularity baseline ({reference:.4g}; best "
                f"{_best(vals, mode):.4g}): the loss does not optimise the ranking (seed 002: full cross-entropy vs BPR)")
    # "never beat its first epoch": a metric that rose and then plateaued is ASHA's business.
    if _gain(vals[0], _best(vals, mode), mode) > cfg.mismatch_gain:
        return None
    # A metric bounded by 1 that starts high (macro-F1 0.91) cannot gain 10%: count its gain
    # against the headroom left (0.91 -> 0.94 closes a third of the gap to 1) instead.
    if mode == "max" and 0 <= vals[0] < 1 and (_best(vals, mode) - vals[0]) / (1 - vals[0]) > cfg.mismatch_gain:
        return None
    return (f"train_loss fell {n} epochs in a row ({recent[0]:.4g} -> {recent[-1]:.4g}) while {metric} never "
            f"improved more than {cfg.mismatch_gain:.0%} on epoch 1 ({vals[0]:.4g} -> best {_best(vals, mode):.4g}): "
            f"the loss does not optimise the ranking (seed 002: full cross-entropy vs BPR)")


# -- public API -----------------------------------------------------------------------------
def diagnose(history: Sequence[Mapping[str, Any]], metric: str, mode: str = "max",
             cfg: DiagnoseConfig = DiagnoseConfig(), reference: float | None = None) -> Diagnosis | None:
    """The pathology visible at the latest epoch of `history`, or None if it looks healthy.
    `reference`: the metric's popularity baseline (validation), if the task has one."""
    if not cfg.enabled or not history:
        return None
    last = history[-1]
    loss, vals = _series(history, LOSS), _series(history, metric)
    for name, reason in (
        ("diverged", lambda: _diverged(loss, vals, metric, cfg)),
        ("collapsed", lambda: _collapsed(loss, vals, metric, mode, last, cfg)),
        ("stuck", lambda: _stuck(history, loss, cfg)),
        ("dominated", lambda: _dominated(history, cfg)),
        ("mismatch", lambda: _mismatch(loss, vals, metric, mode, cfg, reference)),
    ):
        text = reason()
        if text:
            return Diagnosis(name, text, int(_num(last.get("epoch")) or len(history)))
    return None


def first_diagnosis(history: Sequence[Mapping[str, Any]] | Any, metric: str, mode: str = "max",
                    cfg: DiagnoseConfig = DiagnoseConfig(), reference: float | None = None) -> Diagnosis | None:
    """Replay a finished history: the first epoch at which a check fires, or None.

    `history` may be a DataFrame (Result.metrics_dataframe, MLflow histories joined on epoch);
    its NaN cells are read as "not reported" (a table pads missing keys with NaN). The
    trainable raises on a non-finite train_loss, so no real NaN loss is lost that way.
    """
    if hasattr(history, "to_dict"):
        history = [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
                   for r in history.to_dict("records")]
    for i in range(1, len(history) + 1):
        d = diagnose(history[:i], metric, mode, cfg, reference)
        if d:
            return d
    return None


class PeerBests:
    """Per epoch, each trial's best metric so far: is a trial at (or near) the top of its peers?"""

    def __init__(self, mode: str):
        self.mode = mode
        self.at: dict[int, dict[str, float]] = {}  # epoch -> trial_id -> best so far

    def add(self, trial_id: str, epoch: int, best: float) -> None:
        self.at.setdefault(epoch, {})[trial_id] = best

    def leads(self, trial_id: str, epoch: int, best: float, tol: float) -> bool:
        """True if no other trial had beaten `best` by more than `tol` (relative) at this epoch.
        A trial alone at its epoch has no peers to lead: the checks alone decide."""
        others = [v for t, v in self.at.get(epoch, {}).items() if t != trial_id and math.isfinite(v)]
        if not others:
            return False
        top = _best(others, self.mode)
        margin = tol * abs(top)
        return best >= top - margin if self.mode == "max" else best <= top + margin


class PathologyWatch:
    """Every trial's history as its results arrive, and the pathology that stopped it.

    `observe(trial_id, result)` returns the Diagnosis that should stop the trial now, or None.
    It sets `result["stop_reason"]` when it fires, so the result Ray keeps as the trial's last
    names the reason. A stuck or mismatched trial that leads its peers (within `leader_tol`) at
    its epoch runs on: the checks must not stop a sweep's leader. tuner/stopper.py wraps this in
    a Ray Tune Stopper.
    """

    def __init__(self, metric: str, mode: str = "max", cfg: DiagnoseConfig = DiagnoseConfig(),
                 reference: float | None = None):
        self.metric, self.mode, self.cfg, self.reference = metric, mode, cfg, reference
        self.histories: dict[str, list[dict[str, float]]] = {}
        self.reasons: dict[str, Diagnosis] = {}
        self.peers = PeerBests(mode)

    def observe(self, trial_id: str, result: dict[str, Any]) -> Diagnosis | None:
        if not self.cfg.enabled:
            return None
        if trial_id in self.reasons:
            result["stop_reason"] = str(self.reasons[trial_id])
            return self.reasons[trial_id]
        hist = self.histories.setdefault(trial_id, [])
        epoch = _num(result.get("epoch"))
        if epoch is not None:  # a trial restored from a checkpoint reports its epochs again
            hist[:] = [r for r in hist if r.get("epoch", -math.inf) < epoch]
        # keep numbers only: results also carry the config and Ray's bookkeeping
        hist.append({k: v for k, v in result.items() if isinstance(k, str) and _num(v) is not None})
        vals = _series(hist, self.metric)
        if epoch is not None and vals:
            self.peers.add(trial_id, int(epoch), _best(vals, self.mode))
        found = diagnose(hist, self.metric, self.mode, self.cfg, self.reference)
        if found is None or (found.name in ("stuck", "mismatch") and epoch is not None and vals
                             and self.peers.leads(trial_id, int(epoch), _best(vals, self.mode), self.cfg.leader_tol)):
            return None
        self.reasons[trial_id] = found
        result["stop_reason"] = str(found)
        del self.histories[trial_id]  # a stopped trial reports no more
        return found
