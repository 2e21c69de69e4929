"""Recommendation losses: plain functions, and one registry (RANKING_LOSSES) that is their single source.

Three call shapes (`RankingLoss.kind`), the only thing a model dispatches on:
- "sampled": fn(pos [B], neg [B, K], **extra) -> scalar; scores of each positive and its K negatives;
- "inbatch": fn(logits [B, M], targets [B], log_q [M] | None) -> scalar; each row scored against the
             M distinct positives of the batch (in-batch negatives), targets index into M;
- "full":    fn(logits [B, N], targets [B]) -> scalar; scores over the whole catalogue. Where
             logits = q @ k.T, `RankingLoss.linear(q, k, targets)` gives the same loss without the logits.
Models score, losses compare: no loss knows which model produced its scores. An entry also names the
models that accept it (their `loss` knob's choices are read from here) and its floor.
Auxiliary losses (reconstruction, classification, two-view InfoNCE, ...) follow; the two with a
`kind` knob have their own small registries in the same style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from trainables.errors import TunerError
from trainables.negatives import check_unused


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean over (positive, negative) pairs of -log sigmoid(pos - neg)."""
    return F.softplus(neg - pos[:, None]).mean()


def bce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: positives labelled 1, negatives 0, each side averaged (SASRec's loss)."""
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the positive against its K sampled negatives ([B, 1+K] softmax)."""
    logits = torch.cat([pos[:, None], neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device))


def full_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue (SASRec+ / 'full CE')."""
    return F.cross_entropy(logits, targets)


LINEAR_CE_BLOCK = 1 << 21  # logits per block of linear_ce: 8 MB of float32 stays in cache


class _LinearCE(torch.autograd.Function):
    """mean_p CE(q_p @ k^T, t_p), computed block by block, gradients produced in the forward pass.

    Each block of rows is scored, turned into softmax - onehot in place, and multiplied straight
    into the gradients of q and k while it is still in cache; the [P, N] logits never exist and
    the backward pass only scales the saved gradients by the incoming one (the loss is a scalar).
    """

    @staticmethod
    def forward(ctx, q, k, targets, rows, grads):  # q [P, d], k [N, d], targets [P]
        p = q.shape[0]
        gq = torch.empty_like(q) if grads[0] else None
        gk = torch.zeros_like(k) if grads[1] else None
        total = torch.zeros((), dtype=torch.float64, device=q.device)
        for s in range(0, p, rows):
            qb, tb = q[s : s + rows], targets[s : s + rows]
            z = qb @ k.T  # [b, N] logits
            top = z.amax(1, keepdim=True)  # [b, 1]
            zt = z.gather(1, tb[:, None])  # [b, 1] target logits
            z.sub_(top).exp_()
            norm = z.sum(1, keepdim=True)  # [b, 1]
            total += (norm.log() + top - zt).sum(dtype=torch.float64)
            if gq is None and gk is None:
                continue
            z.div_(norm)  # softmax
            z[torch.arange(z.shape[0], device=z.device), tb] -= 1.0  # d CE / d logits = softmax - onehot
            if gq is not None:
                torch.mm(z, k, out=gq[s : s + rows])
            if gk is not None:
                gk.addmm_(z.T, qb)
        ctx.p = p
        ctx.save_for_backward(gq, gk)
        return (total / p).to(q.dtype)

    @staticmethod
    def backward(ctx, grad):
        gq, gk = ctx.saved_tensors
        scale = grad / ctx.p
        return (gq * scale if gq is not None else None, gk * scale if gk is not None else None, None, None, None)


def linear_ce(q: torch.Tensor, k: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """full_ce(q @ k.T, targets) without materialising the logits: q [P, d] rows, k [N, d] items.

    Same value and gradients as the plain form (tests/trainables_tests/test_losses.py), 1.8x faster on CPU for
    Beauty's 12,101 items, and memory O(block x N) instead of O(P x N) (no checkpoint recompute).
    """
    rows = max(1, LINEAR_CE_BLOCK // max(k.shape[0], 1))
    on = torch.is_grad_enabled()
    return _LinearCE.apply(q, k, targets, rows, (on and q.requires_grad, on and k.requires_grad))


def gbce(pos: torch.Tensor, neg: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023), mean over rows of

        beta * softplus(-pos) + sum_k softplus(neg_k)   = -log sigmoid(pos)^beta - sum_k log(1 - sigmoid(neg_k)).

    The paper writes it as plain BCE on a transformed positive logit
    s' = logit(sigmoid(s)^beta) = -log(sigmoid(s)^-beta - 1), since -log sigmoid(s') = beta * softplus(-s);
    the direct form above is the same number without the precision loss of sigmoid(s)^-beta - 1
    (gSASRec-pytorch computes it the same way, in float64). Negatives are summed, not averaged,
    as the calibration argument requires. beta = 1 is BCE with summed negatives; see gbce_beta.
    """
    return (beta * F.softplus(-pos) + F.softplus(neg).sum(1)).mean()


def gbce_beta(num_negatives: int, n_items: int, t: float) -> float:
    """beta = alpha * (t * (1 - 1/alpha) + 1/alpha) with sampling rate alpha = num_negatives / (N - 1).

    t = 0 gives beta = 1 (BCE), t = 1 gives beta = alpha (fully calibrated). alpha is capped at 1:
    with as many negatives as items (sampling with replacement) there is nothing to correct.
    """
    alpha = min(1.0, num_negatives / max(n_items - 1, 1))
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def inbatch_softmax(logits: torch.Tensor, targets: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy against the batch's positives (in-batch negatives; registered as "infonce").

    logits [B, M]: each row scored against the M distinct positive items of the batch; targets [B]
    index the row's own positive among them. With log_q [M] (log of each item's probability of
    being in a batch, i.e. its training frequency) the logQ correction of Yi et al. (2019) scores
    logits - log_q, undoing the popularity bias of in-batch sampling.
    """
    if log_q is not None:
        logits = logits - log_q[None, :]
    return F.cross_entropy(logits, targets)


def bce_positives(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BCE on the positives alone, negatives ignored: seed 000's broken setup, kept to reproduce it.

    Nothing pushes any pair apart, so every tower output collapses to one direction and the loss
    sits at its floor softplus(-s) (0.3133 for a logit scale s = 1)."""
    return F.softplus(-pos).mean()


# --- The ranking-loss registry: the single source of which loss exists, how it is called, who takes it ---

SAMPLED, INBATCH, FULL = "sampled", "inbatch", "full"  # the call shapes of the module docstring
ALL_MODELS = ("bpr_mf", "multimodal", "sasrec", "two_tower")  # the trainables.MODELS that rank items


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@dataclass(frozen=True)
class RankingLoss:
    """One ranking loss: its function, its call shape, the models that accept it, its floor.

    A model accepts a loss iff its name is in `models`, and calls it by `kind` alone: models have
    no branch on a loss's name, so a new loss is one function plus one entry here.
    """

    fn: Callable[..., torch.Tensor]
    kind: str  # SAMPLED, INBATCH or FULL
    models: tuple[str, ...]  # trainables.MODELS names whose `loss` knob accepts it
    # infimum of the loss when every logit lies in [-s, s] (positives at +s, negatives at -s), as
    # floor(s, k) with k negatives per positive; reported by models with bounded logits (two_tower)
    floor: Callable[[float, int], float] | None = None
    linear: Callable[..., torch.Tensor] | None = None  # FULL: fn(q @ k.T, t) from factors, no logits
    knobs: tuple[str, ...] = ()  # config knobs only this loss reads (rejected off their default otherwise)
    extra: Callable[[Any, int], dict] | None = None  # (config, n_items) -> keyword arguments of fn
    bounded_logits_ok: bool = True  # False: meaningless on logits bounded to [-1, 1] (cosine scores)


RANKING_LOSSES: dict[str, RankingLoss] = {
    "bpr": RankingLoss(bpr, SAMPLED, ALL_MODELS, floor=lambda s, k: _softplus(-2 * s)),
    "bce": RankingLoss(bce, SAMPLED, ALL_MODELS, floor=lambda s, k: 2 * _softplus(-s)),  # two means
    "sampled_softmax": RankingLoss(sampled_softmax, SAMPLED, ALL_MODELS,
                                   floor=lambda s, k: math.log1p(k * math.exp(-2 * s))),
    "ce": RankingLoss(full_ce, FULL, ("bpr_mf", "multimodal", "sasrec"), linear=linear_ce),
    "gbce": RankingLoss(gbce, SAMPLED, ("sasrec",), knobs=("gbce_t",), bounded_logits_ok=False,
                        extra=lambda cfg, n: {"beta": gbce_beta(cfg.num_negatives, n, cfg.gbce_t)}),
    "infonce": RankingLoss(inbatch_softmax, INBATCH, ("sasrec", "two_tower"), knobs=("logq_correction",)),
    "bce_positives": RankingLoss(bce_positives, SAMPLED, ("two_tower",), floor=lambda s, k: _softplus(-s)),
}


def lookup(registry: Mapping[str, Any], name: str, what: str = "loss") -> Any:
    """registry[name], or a one-line TunerError naming the valid choices."""
    try:
        return registry[name]
    except KeyError:
        raise TunerError(f"unknown {what} {name!r}; valid: {', '.join(registry)}") from None


def accepted(model: str) -> tuple[str, ...]:
    """Names of the ranking losses `model` accepts, in registry order (its `loss` knob's choices)."""
    return tuple(name for name, entry in RANKING_LOSSES.items() if model in entry.models)


def get_ranking_loss(name: str, model: str | None = None) -> RankingLoss:
    """The entry of loss `name`; with `model`, only if that model accepts it."""
    if model is None:
        return lookup(RANKING_LOSSES, name)
    return lookup({n: RANKING_LOSSES[n] for n in accepted(model)}, name)


def check_loss_knobs(cfg: Any, default: Any, model: str) -> RankingLoss:
    """cfg.loss's entry, after rejecting knobs of `model`'s other losses that differ from `default`:
    a sweep never logs a value that did nothing."""
    loss = get_ranking_loss(cfg.loss, model)
    owners: dict[str, list[str]] = {}
    for name in accepted(model):
        for knob in RANKING_LOSSES[name].knobs:
            owners.setdefault(knob, []).append(name)
    for knob, names in owners.items():
        if knob not in loss.knobs and hasattr(cfg, knob):
            check_unused(cfg, default, (knob,), f"with loss {cfg.loss} (only {', '.join(names)})")
    return loss


def loss_doc(model: str) -> str:
    """The `loss` knob's note in `tuner show`: the choices at import time, and where they come from."""
    return " | ".join(accepted(model)) + " (trainables.losses.RANKING_LOSSES)"


def sampled_losses(model: str) -> str:
    """'a, b, c': the losses of `model` that draw negatives, for messages."""
    return ", ".join(n for n in accepted(model) if RANKING_LOSSES[n].kind == SAMPLED)


# ---------------------------------------------------------------------------------------------
# Auxiliary and classification losses (trainables/multimodal.py, trainables/fusion_classifier.py)
#
# Plain functions again, each returning a scalar mean; the models look them up through this
# module at call time (`losses.uniformity(...)`), so a test can monkeypatch one. Hand-checked
# values on tiny tensors live in tests/trainables_tests/test_aux_losses.py.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuxLoss:
    """One choice of an auxiliary loss knob (recon_loss, cls_loss): fn(pred, target) -> [B, ...] per entry."""

    fn: Callable[..., torch.Tensor]


RECONSTRUCTION_LOSSES: dict[str, AuxLoss] = {
    "mse": AuxLoss(lambda pred, target: F.mse_loss(pred, target)),  # mean (pred - target)^2
    # Huber with beta 1: 0.5 d^2 if |d| < 1 else |d| - 0.5
    "smooth_l1": AuxLoss(lambda pred, target: F.smooth_l1_loss(pred, target, beta=1.0)),
    # `pred` are logits of a multi-hot `target`
    "bce": AuxLoss(lambda pred, target: F.binary_cross_entropy_with_logits(pred, target)),
}


def reconstruction(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean reconstruction error over all entries (each entry's fn takes the mean itself: torch's
    fused mean sums in its own order, and the numbers stay those of every earlier run)."""
    return lookup(RECONSTRUCTION_LOSSES, kind, "reconstruction loss").fn(pred, target)


def squared_correlation(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Squared Pearson correlation of two flattened tensors, in [0, 1]; 0 if either is constant.

    rho = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 * sum (y - mean y)^2 + eps).
    The popularity-debiasing ('causal') term of trainables/multimodal.py.
    """
    x = x.reshape(-1).float()
    y = y.reshape(-1).float()
    xc, yc = x - x.mean(), y - y.mean()
    rho = (xc * yc).sum() / torch.sqrt((xc * xc).sum() * (yc * yc).sum() + eps)
    return rho * rho


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity (Wang & Isola 2020): log mean over pairs i<j of exp(-t ||x_i - x_j||^2), x L2-normalised.

    Lower means more spread out on the sphere; 0 when all points coincide. Needs at least 2 rows.
    """
    z = F.normalize(x.float(), dim=-1)
    d2 = torch.pdist(z, p=2).pow(2)
    return torch.logsumexp(-t * d2, dim=0) - math.log(d2.numel())


def view_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of a [B, P] and b [B, P] (row i of a matches row i of b).

    Two views of the same samples (seed 004's modality projections); not the ranking loss
    `inbatch_softmax` ("infonce"), which scores users against items.

    Rows are L2-normalised; logits = a b^T / temperature; loss = (CE(logits, arange) +
    CE(logits^T, arange)) / 2 (CLIP's loss).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def gate_regularization(gates: torch.Tensor) -> torch.Tensor:
    """Mean (g - 0.5)^2: pulls sigmoid gates away from saturation (seed 004)."""
    return (gates - 0.5).pow(2).mean()


def _focal(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per sample -(1 - p_y)^gamma log p_y (gamma 0 = ce)."""
    logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    return -(1.0 - logp.exp()).clamp(min=0.0).pow(gamma) * logp


def _one_vs_rest(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per sample: mean over classes of the one-vs-rest binary cross-entropy with logits."""
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(1)


# fn(logits [B, C], target [B], gamma) -> per-sample loss [B]
CLASSIFICATION_LOSSES: dict[str, AuxLoss] = {
    "ce": AuxLoss(lambda logits, target, gamma: F.cross_entropy(logits, target, reduction="none")),  # -log p_y
    "bce": AuxLoss(_one_vs_rest),
    "focal": AuxLoss(_focal),
}


def classification(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str = "ce",
    class_weights: torch.Tensor | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Classification loss of logits [B, C] for integer targets [B] (CLASSIFICATION_LOSSES[kind] per sample).

    With class_weights w [C] the result is sum_i w_{y_i} l_i / sum_i w_{y_i} (PyTorch's weighted
    CE convention); without, the plain mean.
    """
    per = lookup(CLASSIFICATION_LOSSES, kind, "classification loss").fn(logits, target, gamma)
    if class_weights is None:
        return per.mean()
    w = class_weights[target]
    return (w * per).sum() / w.sum()
