"""trainables.metrics against a brute-force per-user reference, and the Beauty popularity baseline."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA

from trainables import metrics as M
from trainables.data import Split

KS = (1, 3, 5, 10)


def reference(scores: np.ndarray, split: Split, ks=KS) -> dict[str, float]:
    """Per user: drop seen items (not the target), sort by (-score, item index), find the target."""
    out = {f"{m}_{k}": 0.0 for k in ks for m in ("hr", "ndcg", "mrr")}
    n_users, n_items = scores.shape
    for u in range(n_users):
        t = int(split.targets[u])
        seen = set(split.seen_items[split.seen_indptr[u] : split.seen_indptr[u + 1]].tolist())
        cand = [i for i in range(n_items) if i == t or i not in seen]
        ranking = sorted(cand, key=lambda i: (-float(scores[u, i]), i))
        r = ranking.index(t)
        for k in ks:
            if r < k:
                out[f"hr_{k}"] += 1
                out[f"ndcg_{k}"] += 1 / math.log2(r + 2)
                out[f"mrr_{k}"] += 1 / (r + 1)
    return {k: v / n_users for k, v in out.items()}


def random_split(rng: np.random.Generator, n_users: int, n_items: int, target_in_seen: float = 0.0) -> Split:
    targets = rng.integers(0, n_items, n_users)
    seen = []
    for u in range(n_users):
        s = list(rng.choice(n_items, rng.integers(0, n_items // 2), replace=False))
        if rng.random() < target_in_seen:
            s.append(targets[u])  # a repeat purchase: the target is also in the history
        else:
            s = [i for i in s if i != targets[u]]
        seen.append(s)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen], out=indptr[1:])
    items = np.array([i for s in seen for i in s], dtype=np.int64)
    return Split(targets.astype(np.int64), indptr, items)


def run(scores: np.ndarray, split: Split, batch_users: int) -> dict[str, float]:
    t = torch.as_tensor(scores, dtype=torch.float32)
    return M.evaluate(lambda a, b: t[a:b].clone(), split, KS, batch_users)


def assert_close(got: dict, want: dict) -> None:
    assert set(want) <= set(got)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k


@pytest.mark.parametrize("batch_users", [7, 64, 1000])  # smaller than / not dividing / above 50 users
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_evaluate_matches_brute_force(kind, batch_users):
    rng = np.random.default_rng(0 if kind == "random" else 1)
    n_users, n_items = 50, 40
    if kind == "random":
        scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    else:
        scores = rng.integers(0, 4, (n_users, n_items)).astype(np.float32)  # many ties
    split = random_split(rng, n_users, n_items, target_in_seen=0.5)
    assert any(
        split.targets[u] in split.seen_items[split.seen_indptr[u] : split.seen_indptr[u + 1]] for u in range(n_users)
    )
    want = reference(scores, split)
    assert_close(run(scores, split, batch_users), want)
    assert 0 < want["hr_10"] < 1  # the case is not degenerate


def test_ties_broken_by_item_index():
    # all scores equal, nothing seen: the target's rank is its own index
    split = Split(np.array([0, 3, 9]), np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64))
    got = run(np.zeros((3, 10), dtype=np.float32), split, 2)
    assert got["hr_1"] == pytest.approx(1 / 3)
    assert got["mrr_10"] == pytest.approx((1 + 1 / 4 + 1 / 10) / 3)


def test_seen_items_masked_but_target_kept():
    # user 0: items 0,1 score higher but are seen -> target 2 is ranked first
    # user 1: the target itself (item 0, the best score) is in the history and stays rankable
    scores = np.array([[5, 4, 3, 0], [5, 4, 3, 0]], dtype=np.float32)
    split = Split(np.array([2, 0]), np.array([0, 2, 4]), np.array([0, 1, 0, 1]))
    got = run(scores, split, 1)
    assert got["hr_1"] == 1.0 and got["ndcg_1"] == 1.0


def test_nan_target_score_is_a_miss():
    scores = np.zeros((2, 20), dtype=np.float32)
    scores[0, 1] = np.nan  # a diverged model: NaN compares false with everything
    split = Split(np.array([1, 1]), np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int64))
    got = run(scores, split, 2)
    assert got["hr_10"] == pytest.approx(0.5)  # user 1 hits (rank 1), user 0 misses instead of ranking first


def test_from_ranks_formulas():
    got = M.from_ranks(torch.tensor([0, 1, 4, 20]), (5,))
    assert got["hr_5"] == pytest.approx(3 / 4)
    assert got["ndcg_5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert got["mrr_5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)


def test_metric_names():
    assert M.metric_names((10, 20), "val_") == [
        "val_hr_10", "val_ndcg_10", "val_mrr_10", "val_hr_20", "val_ndcg_20", "val_mrr_20",
    ]


def test_popularity_shortcut_equals_ranking_broadcast_counts():
    """popularity() ranks without [U, N] scores; it must equal evaluate() on the counts themselves."""
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 15
    counts = rng.integers(0, 4, n_items)  # many exact ties: the index rule decides
    lengths = rng.integers(0, 6, n_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, n_items, indptr[-1])  # repeats within a user too
    targets = rng.integers(0, n_items, n_users)
    for u in np.flatnonzero(lengths[:5]):  # some targets are items the user has seen (a repeat stays rankable)
        targets[u] = items[indptr[u]]
    split = Split(targets, indptr, items)
    c = torch.as_tensor(counts, dtype=torch.float32)
    want = M.evaluate(lambda a, b: c.expand(b - a, -1).clone(), split, (1, 3, 10), 7)
    assert M.popularity(counts, split, (1, 3, 10)) == pytest.approx(want, abs=1e-12)


BEAUTY = os.path.join(SHARED_DATA, "s3rec", "Beauty.txt")


@pytest.mark.skipif(not os.path.isfile(BEAUTY), reason=f"real data file {BEAUTY} (shared/ beside the checkout) is absent")
def test_beauty_popularity_baseline_matches_published():
    from trainables.data import load

    data = load(BEAUTY)
    got = M.popularity(data.train_counts(), data.split("test"), (10,))
    assert round(got["hr_10"], 4) == 0.0115
    assert round(got["ndcg_10"], 4) == 0.0055
