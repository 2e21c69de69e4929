"""The embedded default dataset: seeded implicit feedback with structure every model can find.

Planted truth (returned in `Dataset.truth`, so tests can check that models recover it):
- popularity: item i has Zipf weight 1/rank_i (rank a random permutation), entering each choice
  as a log-popularity bias, so a popularity baseline is non-trivial but beatable;
- latent preferences: user u picks item i with logit  strength * <p_u, q_i> / sqrt(d) + log pop_i,
  p and q standard normal of dimension `dim` (what matrix factorisation can learn);
- sequential dependence: with probability `p_next` the next item is succ[previous] (a fixed
  random permutation), if not yet consumed (what sequence models can learn beyond MF);
- content: item features = q_i @ W + noise, [N, n_features], plus a one-hot of 8 categories
  taken from q's first coordinate (what content-aware models can use).
Users never repeat an item. Sequence lengths are 5 + Poisson(mean_length - 5).
"""

from __future__ import annotations

import numpy as np

from trainables.data import Dataset, from_sequences


def generate(
    n_users: int = 3000,
    n_items: int = 1000,
    mean_length: float = 20.0,
    seed: int = 0,
    dim: int = 8,
    strength: float = 3.0,
    p_next: float = 0.3,
    n_features: int = 16,
) -> Dataset:
    # one generator drawn from in a fixed order (planted truth, lengths, sequences, features):
    # the order is part of the data, so the same seed gives the same arrays bit for bit
    rng = np.random.default_rng(seed)
    popularity, p, q, logits, succ = _plant(rng, n_users, n_items, dim, strength)
    lengths = np.minimum(5 + rng.poisson(max(mean_length - 5.0, 0.0), n_users), n_items - 1)
    seqs = _draw_sequences(rng, logits, succ, lengths, p_next)
    features = _content(rng, q, n_features)
    users = [str(u) for u in range(n_users)]
    item_seqs = [[str(i) for i in seqs[u, : lengths[u]]] for u in range(n_users)]
    ds = from_sequences(f"synthetic(n_users={n_users},n_items={n_items},seed={seed})", users, item_seqs)
    return _with_truth(ds, popularity, p, q, succ, p_next, features)


def _plant(rng: np.random.Generator, n_users: int, n_items: int, dim: int, strength: float):
    """Popularity [N] (Zipf over a random ranking), user factors p [U, d], item factors q [N, d],
    choice logits [U, N] (float32) and the successor permutation succ [N]."""
    rank = rng.permutation(n_items) + 1
    popularity = 1.0 / rank  # Zipf, exponent 1
    log_pop = np.log(popularity / popularity.sum())
    p = rng.standard_normal((n_users, dim))
    q = rng.standard_normal((n_items, dim))
    logits = (strength * (p @ q.T) / np.sqrt(dim) + log_pop).astype(np.float32)  # [U, N]
    succ = rng.permutation(n_items)
    return popularity, p, q, logits, succ


def _draw_sequences(rng: np.random.Generator, logits: np.ndarray, succ: np.ndarray, lengths: np.ndarray,
                    p_next: float) -> np.ndarray:
    """Item sequences [U, max length], -1 past each user's length: step t draws every user's next
    item at once, never one the user already has."""
    n_users, n_items = logits.shape
    max_len = int(lengths.max())
    seqs = np.full((n_users, max_len), -1, dtype=np.int64)
    consumed = np.zeros((n_users, n_items), dtype=bool)
    rows = np.arange(n_users)
    prev = None
    for t in range(max_len):
        # Gumbel-max sample from softmax(logits) over unconsumed items, all users at once.
        with np.errstate(divide="ignore"):  # u == 0 gives -inf: that item is simply not drawn
            g = logits - np.log(-np.log(rng.random((n_users, n_items), dtype=np.float32)))
        g[consumed] = -np.inf
        choice = g.argmax(axis=1)
        if prev is not None:
            nxt = succ[prev]
            jump = (rng.random(n_users) < p_next) & ~consumed[rows, nxt]
            choice = np.where(jump, nxt, choice)
        active = t < lengths
        seqs[active, t] = choice[active]
        consumed[rows[active], choice[active]] = True
        prev = choice
    return seqs


def _content(rng: np.random.Generator, q: np.ndarray, n_features: int) -> np.ndarray:
    """Item features [N, n_features + 8] float32: q @ W plus noise, then a one-hot of 8 categories
    (octiles of q's first coordinate)."""
    dim, n_items = q.shape[1], q.shape[0]
    w = rng.standard_normal((dim, n_features)) / np.sqrt(dim)
    dense = q @ w + 0.1 * rng.standard_normal((n_items, n_features))
    cats = np.digitize(q[:, 0], np.quantile(q[:, 0], np.linspace(0, 1, 9)[1:-1]))
    return np.concatenate([dense, np.eye(8)[cats]], axis=1).astype(np.float32)


def _with_truth(ds: Dataset, popularity: np.ndarray, p: np.ndarray, q: np.ndarray, succ: np.ndarray,
                p_next: float, features: np.ndarray) -> Dataset:
    """`ds` with its item features and planted truth in its own dense item ids.

    from_sequences remaps ids by first appearance, and items never drawn are absent from it."""
    n_items = len(popularity)
    orig = ds.item_ids.astype(np.int64)  # dense -> generator id
    dense_of = np.empty(n_items, dtype=np.int64)
    dense_of[orig] = np.arange(len(orig))
    n = ds.n_items
    truth = {
        "popularity": popularity[orig],
        "item_factors": q[orig],
        "user_factors": p,
        "successor": np.where(np.isin(succ[orig], orig), dense_of[np.clip(succ[orig], 0, n_items - 1)], -1),
        "p_next": p_next,
    }
    return Dataset(
        ds.name, ds.n_users, n, ds.train_indptr, ds.train_items, ds.valid, ds.test,
        item_features=features[orig], item_ids=ds.item_ids, truth=truth,
    )
