"""Recommendation losses: plain functions in one registry.

Two shapes, told apart by `Loss.kind`:
- "sampled": fn(pos [B], neg [B, K]) -> scalar; scores of each positive and its K negatives;
- "full":    fn(logits [B, N], targets [B]) -> scalar; scores over the whole catalogue.
Models score, losses compare: no loss knows which model produced its scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from tuner.errors import TunerError


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


@dataclass(frozen=True)
class Loss:
    fn: Callable[..., torch.Tensor]
    kind: str  # "sampled" or "full"


LOSSES: dict[str, Loss] = {
    "bpr": Loss(bpr, "sampled"),
    "bce": Loss(bce, "sampled"),
    "sampled_softmax": Loss(sampled_softmax, "sampled"),
    "ce": Loss(full_ce, "full"),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise TunerError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None
