"""Similarity heads: how a sequence representation x scores an item representation y.

Registry SIMILARITIES (seed 003's "距离计算" options):
- dot:        <x, y>                                   (SASRec's original score)
- cosine:     <x/|x|, y/|y|>, bounded to [-1, 1]       (see the gBCE rule in trainables/sasrec.py)
- scaled_dot: <x, y> / sqrt(d)
- bilinear:   x^T W y, W [d, d] learned, initialised to the identity (starts as dot)
- adaptive:   (alpha * dot + beta * cosine + gamma * scaled_dot) * temperature, all four learned,
              initialised at seed 003's 0.5 / 0.3 / 0.2 and 1.0 (knobs of the model config);
              their current values are reported every epoch (metrics()).

Every head has two forms: pair(x, y) scores broadcastable [..., d] tensors elementwise
(positives [P, d] vs [P, d], or [P, 1, d] vs negatives [P, K, d]); matrix(x, Y) scores
[P, d] against [M, d] in one matmul (full catalogue, in-batch pools), as factors(x, Y) = (q, k)
with matrix = q @ k.T.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import TunerError

SIMILARITIES = ("dot", "cosine", "scaled_dot", "bilinear", "adaptive")
EPS = 1e-8


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=EPS)


class Similarity(nn.Module):
    def pair(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def factors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q [P, d'], k [M, d']) with matrix(x, y) = q @ k.T: every head is an inner product of
        transformed vectors, so a full-catalogue loss can run blockwise on the factors (losses.linear_ce)."""
        raise NotImplementedError

    def matrix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, k = self.factors(x, y)
        return q @ k.T

    def metrics(self) -> dict[str, float]:
        return {}


class Dot(Similarity):
    def pair(self, x, y):
        return (x * y).sum(-1)

    def factors(self, x, y):
        return x, y


class Cosine(Similarity):
    def pair(self, x, y):
        return (_unit(x) * _unit(y)).sum(-1)

    def factors(self, x, y):
        return _unit(x), _unit(y)


class ScaledDot(Similarity):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)

    def pair(self, x, y):
        return (x * y).sum(-1) * self.scale

    def factors(self, x, y):
        return x * self.scale, y


class Bilinear(Similarity):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def pair(self, x, y):
        return ((x @ self.weight) * y).sum(-1)

    def factors(self, x, y):
        return x @ self.weight, y


class Adaptive(Similarity):
    def __init__(self, dim: int, alpha: float = 0.5, beta: float = 0.3, gamma: float = 0.2, temperature: float = 1.0):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))

    def pair(self, x, y):
        dot = (x * y).sum(-1)
        cos = (_unit(x) * _unit(y)).sum(-1)
        return ((self.alpha + self.gamma * self.scale) * dot + self.beta * cos) * self.temperature

    def factors(self, x, y):
        # alpha * dot + gamma * dot / sqrt(d) share one term; the cosine term rides in d more columns:
        # [w_dot x, w_cos x/|x|] @ [y, y/|y|]^T = w_dot <x, y> + w_cos cos(x, y)
        w_dot = (self.alpha + self.gamma * self.scale) * self.temperature
        w_cos = self.beta * self.temperature
        return torch.cat([w_dot * x, w_cos * _unit(x)], -1), torch.cat([y, _unit(y)], -1)

    def metrics(self) -> dict[str, float]:
        return {
            "sim_alpha": self.alpha.item(),
            "sim_beta": self.beta.item(),
            "sim_gamma": self.gamma.item(),
            "sim_temperature": self.temperature.item(),
        }


def make_similarity(name: str, dim: int, **adaptive_init: float) -> Similarity:
    """A head by registry name; adaptive_init: alpha, beta, gamma, temperature (adaptive only)."""
    if name == "dot":
        return Dot()
    if name == "cosine":
        return Cosine()
    if name == "scaled_dot":
        return ScaledDot(dim)
    if name == "bilinear":
        return Bilinear(dim)
    if name == "adaptive":
        return Adaptive(dim, **adaptive_init)
    raise TunerError(f"unknown similarity {name!r}; valid: {', '.join(SIMILARITIES)}")
