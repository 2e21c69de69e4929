"""Negative samplers for the sampled losses, vectorised on the trial's device.

Three distributions over the N items (SAMPLERS):
- uniform:    q_i = 1/N (one torch.randint);
- popularity: q_i proportional to c_i ** pop_power, c_i the item's real number of TRAINING
              interactions (Dataset.train_counts(); seed 003 modelled popularity as 1/item_id,
              which only means something for ids sorted by popularity). pop_power 0 is uniform
              over the catalogue, 1 is proportional to counts, 0.75 is word2vec's choice;
              items never seen in training get weight 0 (for pop_power > 0);
- mixed:      q = popular_ratio * popularity + (1 - popular_ratio) * uniform (seed 003's
              "热门 + 随机" mix, popular_ratio 0.3 there), drawn per negative as a mixture, so
              that the ratio holds in expectation even for one negative per positive.
Non-uniform draws are one torch.multinomial over q.

`exclude_seen` removes each row's user's training items: draws are checked against a sorted
tensor of user * N + item keys (torch.searchsorted), rejected entries are redrawn together, and
the few left after `max_rounds` are drawn exactly from q restricted to the user's unseen items.
The result is q conditioned on "not seen by this user"; no per-sample Python loop anywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from trainables.errors import TunerError

SAMPLERS = ("uniform", "popularity", "mixed")


def popularity_weights(counts: np.ndarray, pop_power: float) -> np.ndarray:
    """counts ** pop_power as float64 (0 ** 0 = 1: pop_power 0 is uniform)."""
    return np.power(np.asarray(counts, dtype=np.float64), pop_power)


def sampler_probs(kind: str, counts: np.ndarray, pop_power: float = 1.0, popular_ratio: float = 0.3) -> np.ndarray:
    """The sampling distribution q [N] (before excluding seen items)."""
    n = len(counts)
    if kind not in SAMPLERS:
        raise TunerError(f"unknown sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
    uniform = np.full(n, 1.0 / n)
    if kind == "uniform":
        return uniform
    w = popularity_weights(counts, pop_power)
    if w.sum() <= 0:
        raise TunerError("popularity sampler: no item has a training interaction")
    pop = w / w.sum()
    return pop if kind == "popularity" else popular_ratio * pop + (1.0 - popular_ratio) * uniform


class NegativeSampler:
    """Draws [rows, k] negative item ids; optionally never a row's user's training items."""

    def __init__(
        self,
        kind: str,
        counts: np.ndarray,
        *,
        pop_power: float = 1.0,
        popular_ratio: float = 0.3,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
        device: torch.device | str = "cpu",
        max_rounds: int = 20,
    ):
        self.kind, self.n_items = kind, len(counts)
        self.device = torch.device(device)
        q = sampler_probs(kind, counts, pop_power, popular_ratio)
        self.probs = torch.as_tensor(q, dtype=torch.float32, device=self.device)  # [N]
        self.max_rounds = max_rounds
        self.seen_indptr = self.seen_items = self.seen_keys = None
        if seen is not None:
            indptr, items = (np.asarray(a, dtype=np.int64) for a in seen)
            users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
            self.seen_indptr = torch.as_tensor(indptr, device=self.device)
            self.seen_items = torch.as_tensor(items, device=self.device)
            self.seen_keys = torch.as_tensor(np.unique(users * self.n_items + items), device=self.device)

    def log_probs(self) -> torch.Tensor:
        """log q [N] (-inf for items the sampler never draws)."""
        return torch.log(self.probs)

    def _draw(self, n: int, gen: torch.Generator | None) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.randint(self.n_items, (n,), generator=gen, device=self.device)
        return torch.multinomial(self.probs, n, replacement=True, generator=gen)

    def is_seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Elementwise: was `items` in the training history of `users`? (same shapes)."""
        keys = users * self.n_items + items
        idx = torch.searchsorted(self.seen_keys, keys).clamp_(max=self.seen_keys.shape[0] - 1)
        return self.seen_keys[idx] == keys

    def sample(self, rows: int, k: int, gen: torch.Generator | None = None, users: torch.Tensor | None = None) -> torch.Tensor:
        """[rows, k] negatives; with `users` [rows] and seen items given, none of those users' items."""
        neg = self._draw(rows * k, gen).view(rows, k)
        if users is None or self.seen_keys is None:
            return neg
        u = users[:, None].expand(rows, k)
        bad = self.is_seen(u, neg)
        for _ in range(self.max_rounds):
            n_bad = int(bad.sum())
            if n_bad == 0:
                return neg
            neg[bad] = self._draw(n_bad, gen)
            bad = self.is_seen(u, neg)
        if bool(bad.any()):
            self._exact(neg, bad, users, gen)
        return neg

    def _exact(self, neg: torch.Tensor, bad: torch.Tensor, users: torch.Tensor, gen) -> None:
        """In place: redraw neg[bad] from q restricted to each row's unseen items (rows left over)."""
        rows = bad.any(1).nonzero().squeeze(1)  # [R]
        u = users[rows]
        lo, hi = self.seen_indptr[u], self.seen_indptr[u + 1]
        counts = hi - lo
        r_idx = torch.repeat_interleave(torch.arange(rows.shape[0], device=self.device), counts)
        starts = torch.repeat_interleave(lo - torch.cumsum(counts, 0) + counts, counts)
        pos = starts + torch.arange(int(counts.sum()), device=self.device)
        seen = torch.zeros(rows.shape[0], self.n_items, dtype=torch.bool, device=self.device)  # [R, N]
        seen[r_idx, self.seen_items[pos]] = True
        w = self.probs.expand(rows.shape[0], -1) * ~seen
        empty = w.sum(1) <= 0  # every item q can draw was seen: uniform over the unseen ones instead
        if bool(empty.any()):
            w[empty] = (~seen[empty]).float()
            if bool((w.sum(1) <= 0).any()):
                raise TunerError("negative sampling: a user has interacted with every item; cannot exclude seen items")
        draws = torch.multinomial(w, neg.shape[1], replacement=True, generator=gen)  # [R, k]
        sub = neg[rows]
        sub[bad[rows]] = draws[bad[rows]]
        neg[rows] = sub


# --- config rules shared by the models that sample negatives -------------------------------------


def check_unused(cfg, default, knobs, reason: str) -> None:
    """Reject knobs that differ from their default although `reason` says they do nothing."""
    for k in knobs:
        if getattr(cfg, k) != getattr(default, k):
            raise TunerError(
                f"{k}: {getattr(cfg, k)!r} has no effect {reason}; leave it at its default {getattr(default, k)!r}")


def check_negative_knobs(cfg, default, sampled: bool, count_knob: str, reason: str) -> None:
    """Sampler knobs (`count_knob`, sampler, pop_power, popular_ratio, exclude_seen) are set only
    when the loss samples negatives; pop_power needs a popularity-based sampler, popular_ratio mixed."""
    if not sampled:
        check_unused(cfg, default, (count_knob, "sampler", "pop_power", "popular_ratio", "exclude_seen"), reason)
        return
    if cfg.sampler == "uniform":
        check_unused(cfg, default, ("pop_power",), "with sampler uniform (only popularity and mixed use it)")
    if cfg.sampler != "mixed":
        check_unused(cfg, default, ("popular_ratio",), f"with sampler {cfg.sampler} (only mixed uses it)")
