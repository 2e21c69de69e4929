"""Negative samplers: their distributions, and that excluded items are never drawn."""

import numpy as np
import pytest
import torch

from trainables.errors import TunerError
from trainables.negatives import NegativeSampler, sampler_probs

COUNTS = np.array([1000, 400, 200, 100, 50, 20, 10, 5, 1, 0], dtype=np.int64)


def draw(sampler, rows=20000, k=10, seed=0, users=None):
    gen = torch.Generator().manual_seed(seed)
    return sampler.sample(rows, k, gen, users=users)


def freqs(neg, n):
    return np.bincount(neg.flatten().numpy(), minlength=n) / neg.numel()


def test_uniform_covers_the_catalogue_evenly():
    neg = draw(NegativeSampler("uniform", COUNTS))
    assert neg.shape == (20000, 10) and neg.dtype == torch.long
    f = freqs(neg, 10)
    assert np.abs(f - 0.1).max() < 0.01


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_popularity_follows_counts_to_the_power(power):
    neg = draw(NegativeSampler("popularity", COUNTS, pop_power=power))
    f = freqs(neg, 10)
    want = COUNTS.astype(float) ** power
    want /= want.sum()
    assert np.corrcoef(f, want)[0, 1] > 0.999
    assert np.abs(f - want).max() < 0.01
    assert f[-1] == 0.0  # never-trained item: weight 0


def test_pop_power_zero_is_uniform_and_mixed_is_the_mixture():
    np.testing.assert_allclose(sampler_probs("popularity", COUNTS, pop_power=0.0), np.full(10, 0.1))
    neg = draw(NegativeSampler("mixed", COUNTS, pop_power=1.0, popular_ratio=0.3))
    want = 0.3 * COUNTS / COUNTS.sum() + 0.7 / 10
    assert np.abs(freqs(neg, 10) - want).max() < 0.01


def test_excluded_seen_items_are_never_drawn():
    # user 0 saw the two most popular items, user 1 saw every item but one (exact fallback path),
    # user 2 saw nothing
    indptr = np.array([0, 2, 11, 11])
    items = np.array([0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    for kind in ("uniform", "popularity", "mixed"):
        s = NegativeSampler(kind, COUNTS, seen=(indptr, items), max_rounds=2)
        users = torch.tensor([0, 1, 2]).repeat(2000)
        neg = draw(s, rows=users.shape[0], k=5, users=users)
        assert not s.is_seen(users[:, None].expand_as(neg), neg).any()
        assert set(neg[users == 1].flatten().tolist()) == {9}  # the only item user 1 has not seen
        assert not set(neg[users == 0].flatten().tolist()) & {0, 1}
        if kind == "popularity":
            f = freqs(neg[users == 0], 10)  # popularity renormalised over the unseen items
            want = np.where(np.isin(np.arange(10), [0, 1]), 0, COUNTS).astype(float)
            assert np.abs(f - want / want.sum()).max() < 0.02


def test_a_user_who_saw_everything_is_an_error():
    s = NegativeSampler("uniform", COUNTS, seen=(np.array([0, 10]), np.arange(10)), max_rounds=1)
    with pytest.raises(TunerError, match="every item"):
        draw(s, rows=2, k=2, users=torch.tensor([0, 0]))


def test_same_generator_seed_same_draws():
    s = NegativeSampler("mixed", COUNTS, pop_power=0.75)
    assert torch.equal(draw(s, 100, 3, seed=5), draw(s, 100, 3, seed=5))


def test_unknown_sampler_lists_valid():
    with pytest.raises(TunerError, match="valid: uniform, popularity, mixed"):
        NegativeSampler("hard", COUNTS)
