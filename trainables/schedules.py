"""Loss-weight schedules shared by the multi-loss trainables: phases, warmup, adaptive weighting.

PhaseSchedule (seed 002's three-phase training; trainables/multimodal.py)
    Epochs are 1-based, as in trainables.loop.fit. Phase p covers the epochs after the end of
    phase p-1 up to and including `ends[p-1]`; the last phase runs to the end of training.
    Seed 002's BPR table is ends = (10, 30): phase 1 = epochs 1-10, phase 2 = 11-30, phase 3 =
    31+. A phase of length 0 is skipped. Each auxiliary loss has one alpha per phase; the alpha
    in force at epoch e is  alphas[name][phase(e) - 1] * ramp(e)  with the warmup ramp
    ramp(e) = min(1, e / warmup_epochs)  (1 when warmup_epochs is 0): epoch 1 gets 1/W of the
    phase alpha, epoch W and later the full alpha. An alpha of exactly 0 stays 0 under the ramp,
    which is what the trainables use to switch a term (and its own parameters) off.

LossWeighter (seed 004's loss weighting; trainables/fusion_classifier.py)
    Weights of the auxiliary loss groups against a reference loss (the classification loss):
    - fixed:       w_k = base_k;
    - magnitude:   loss-magnitude normalisation. Exponential moving averages (momentum m) of each
                   loss's detached value, m_k <- m * m_k + (1 - m) * L_k (initialised to the first
                   value seen), and w_k = base_k * m_ref / m_k: every weighted auxiliary term is
                   kept at base_k times the classification loss's magnitude;
    - uncertainty: Kendall et al. (2018) homoscedastic uncertainty, one learned log-variance s_k
                   per group: the group contributes base_k * (exp(-s_k) L_k + s_k), i.e.
                   w_k = base_k * exp(-s_k) (at the optimum exp(-s_k) = 1 / L_k).
    Both adaptive modes are bounded: w_k / base_k stays within [min_factor, max_factor] (the
    magnitude weights are clipped; s_k is clamped to [-ln max_factor, -ln min_factor]).
    The warmup ramp multiplies every auxiliary weight in all three modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

WEIGHTINGS = ("fixed", "magnitude", "uncertainty")


def ramp(epoch: int, warmup_epochs: int) -> float:
    """Linear warmup factor at 1-based `epoch`: min(1, epoch / warmup_epochs); 1 without warmup."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, max(epoch, 0) / warmup_epochs)


@dataclass(frozen=True)
class PhaseSchedule:
    ends: tuple[int, ...]  # cumulative last epoch of every phase but the final one
    alphas: Mapping[str, tuple[float, ...]]  # loss name -> one alpha per phase (len(ends) + 1)
    warmup_epochs: int = 0

    def __post_init__(self):
        if any(b < a for a, b in zip(self.ends, self.ends[1:])):
            raise ValueError(f"phase ends must be non-decreasing, got {self.ends}")
        for name, values in self.alphas.items():
            if len(values) != len(self.ends) + 1:
                raise ValueError(f"{name}: {len(values)} alphas for {len(self.ends) + 1} phases")

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], alphas: Mapping[str, Sequence[float]], warmup_epochs: int = 0):
        """Phases given by their lengths in epochs (all but the last, which runs to the end)."""
        ends, total = [], 0
        for n in lengths:
            total += int(n)
            ends.append(total)
        return cls(tuple(ends), {k: tuple(float(a) for a in v) for k, v in alphas.items()}, int(warmup_epochs))

    @property
    def n_phases(self) -> int:
        return len(self.ends) + 1

    def phase(self, epoch: int) -> int:
        """1-based phase of 1-based `epoch`."""
        return 1 + sum(epoch > end for end in self.ends)

    def ramp(self, epoch: int) -> float:
        return ramp(epoch, self.warmup_epochs)

    def alpha(self, name: str, epoch: int) -> float:
        return self.alphas[name][self.phase(epoch) - 1] * self.ramp(epoch)

    def alphas_at(self, epoch: int) -> dict[str, float]:
        return {name: self.alpha(name, epoch) for name in self.alphas}


class LossWeighter(nn.Module):
    """Weights of auxiliary loss groups (see the module docstring for the three modes).

    Call `combine(losses, reference, ramp)` in every training step: it returns the weighted sum
    of the auxiliary groups (a tensor to add to the reference loss) and updates the magnitude
    statistics when training. `weights(ramp)` gives the current effective weights as floats.
    Its learned log-variances (uncertainty mode) must be given to the optimizer; its state
    (log-variances, moving averages) is part of state_dict, hence of every checkpoint.
    """

    def __init__(self, base: Mapping[str, float], mode: str = "fixed", momentum: float = 0.9,
                 min_factor: float = 0.1, max_factor: float = 10.0):
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {mode!r}; valid: {', '.join(WEIGHTINGS)}")
        if not 0 < min_factor <= max_factor:
            raise ValueError(f"need 0 < min_factor <= max_factor, got {min_factor}, {max_factor}")
        self.names = tuple(base)
        self._base = tuple(float(base[k]) for k in self.names)
        self.mode, self.momentum = mode, float(momentum)
        self.min_factor, self.max_factor = float(min_factor), float(max_factor)
        self.register_buffer("base", torch.tensor([float(base[k]) for k in self.names]))
        self.register_buffer("ema", torch.zeros(len(self.names)))
        self.register_buffer("ema_ref", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        if mode == "uncertainty":
            self.log_var = nn.Parameter(torch.zeros(len(self.names)))
        else:
            self.log_var = None

    def factors(self) -> torch.Tensor:
        """w_k / base_k (before warmup), within [min_factor, max_factor]; detached."""
        with torch.no_grad():
            if self.mode == "uncertainty":
                return torch.exp(-self._clamped_log_var()).clamp(self.min_factor, self.max_factor)
            if self.mode == "magnitude" and bool(self.seen):
                f = self.ema_ref / self.ema.clamp(min=1e-12)
                return f.clamp(self.min_factor, self.max_factor)
            return torch.ones_like(self.base)

    def weights(self, ramp: float = 1.0) -> dict[str, float]:
        return {k: b * float(f) * ramp for k, b, f in zip(self.names, self._base, self.factors())}

    def _clamped_log_var(self) -> torch.Tensor:
        return self.log_var.clamp(-math.log(self.max_factor), -math.log(self.min_factor))

    @torch.no_grad()
    def _update(self, values: torch.Tensor, reference: torch.Tensor) -> None:
        if not bool(self.seen):
            self.ema.copy_(values)
            self.ema_ref.copy_(reference)
            self.seen.fill_(True)
        else:
            m = self.momentum
            self.ema.mul_(m).add_((1 - m) * values)
            self.ema_ref.mul_(m).add_((1 - m) * reference)

    def combine(self, losses: Mapping[str, torch.Tensor], reference: torch.Tensor, ramp: float = 1.0) -> torch.Tensor:
        """sum_k w_k L_k (plus base_k s_k in uncertainty mode), times the warmup ramp."""
        stacked = torch.stack([losses[k] for k in self.names])
        if self.mode == "uncertainty":
            s = self._clamped_log_var()
            return ramp * (self.base * (torch.exp(-s) * stacked + s)).sum()
        if self.mode == "magnitude" and self.training:
            self._update(stacked.detach().abs(), reference.detach().abs())
        return ramp * (self.base * self.factors() * stacked).sum()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep learned log-variances inside their bounds (call after optimizer.step())."""
        if self.log_var is not None:
            self.log_var.copy_(self._clamped_log_var())
