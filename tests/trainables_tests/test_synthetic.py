"""trainables.synthetic: seeded, well-formed, and the planted structure is really there."""

from __future__ import annotations

import numpy as np
import pytest

from trainables import metrics
from trainables.synthetic import generate
from trainables import get_model
from trainables.loop import fit


def full_sequences(d) -> list[np.ndarray]:
    return [np.concatenate([d.train_items[d.train_indptr[u] : d.train_indptr[u + 1]], [d.valid[u], d.test[u]]])
            for u in range(d.n_users)]


@pytest.fixture(scope="module")
def data():
    return generate(n_users=500, n_items=200, mean_length=15.0, seed=0)


def test_deterministic_for_a_seed():
    a, b, c = generate(100, 60, 10.0, seed=3), generate(100, 60, 10.0, seed=3), generate(100, 60, 10.0, seed=4)
    for field in ("train_indptr", "train_items", "valid", "test", "item_features"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.array_equal(a.truth["successor"], b.truth["successor"])
    assert not (np.array_equal(a.train_items, c.train_items) and np.array_equal(a.test, c.test))


def test_well_formed(data):
    seqs = full_sequences(data)
    assert data.n_users == 500 and len(seqs) == 500
    assert min(len(s) for s in seqs) >= 5
    assert all(len(np.unique(s)) == len(s) for s in seqs)  # no repeated item within a user
    assert data.train_items.min() >= 0 and max(s.max() for s in seqs) < data.n_items <= 200
    assert data.item_features.shape == (data.n_items, 16 + 8)  # dense features + 8 one-hot categories
    assert np.isfinite(data.item_features).all()
    assert generate(50, 40, 8.0, seed=1, n_features=5).item_features.shape[1] == 5 + 8
    assert data.truth["item_factors"].shape[0] == data.n_items == data.truth["popularity"].shape[0]


def test_popularity_skew(data):
    counts = np.sort(data.train_counts())[::-1]
    top = counts[: data.n_items // 10].sum() / counts.sum()
    assert top > 0.25  # the top 10% of items hold well above their uniform 10% share
    # and the planted popularity is what drives it
    assert np.corrcoef(np.log(data.truth["popularity"]), np.log1p(data.train_counts()))[0, 1] > 0.3


def test_planted_successor(data):
    succ = data.truth["successor"]
    pairs = [(a, b) for s in full_sequences(data) for a, b in zip(s[:-1], s[1:])]
    p = np.mean([succ[a] == b for a, b in pairs])
    assert abs(p - data.truth["p_next"]) < 0.05
    assert p > 20 / data.n_items  # far above chance


def test_bpr_mf_beats_popularity(data):
    pop = metrics.popularity(data.train_counts(), data.split("valid"), (10,))["ndcg_10"]
    history = []
    config = {"loss": "bpr", "num_negatives": 4, "dim": 32, "lr": 0.02, "epochs": 5, "batch_size": 256}
    fit(get_model("bpr_mf"), config, data, lambda m, _: history.append(m["val_ndcg_10"]), ks=(10,))
    assert len(history) == 5
    assert max(history) > 1.2 * pop, (history, pop)  # the best validation epoch, as a sweep reports it
