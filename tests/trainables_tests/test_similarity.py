"""Similarity heads: hand values, pair/matrix agreement, adaptive fusion parameters."""

import math

import pytest
import torch

from trainables.errors import TunerError
from trainables.similarity import SIMILARITIES, make_similarity

X = torch.tensor([[3.0, 4.0]])  # |x| = 5
Y = torch.tensor([[1.0, 0.0], [0.0, 2.0]])


def test_hand_values():
    want = {
        "dot": [3.0, 8.0],
        "cosine": [0.6, 0.8],
        "scaled_dot": [3 / math.sqrt(2), 8 / math.sqrt(2)],
        "bilinear": [3.0, 8.0],  # W starts as the identity
        "adaptive": [0.5 * 3 + 0.3 * 0.6 + 0.2 * 3 / math.sqrt(2), 0.5 * 8 + 0.3 * 0.8 + 0.2 * 8 / math.sqrt(2)],
    }
    for name in SIMILARITIES:
        sim = make_similarity(name, 2)
        torch.testing.assert_close(sim.matrix(X, Y)[0], torch.tensor(want[name]), msg=name)
        torch.testing.assert_close(sim.pair(X.expand(2, 2), Y), torch.tensor(want[name]), msg=name)


def test_bilinear_learns_w():
    sim = make_similarity("bilinear", 2)
    with torch.no_grad():
        sim.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    # x^T W y with x = (3, 4): x W = (8, 3)
    torch.testing.assert_close(sim.matrix(X, Y)[0], torch.tensor([8.0, 6.0]))


@pytest.mark.parametrize("name", SIMILARITIES)
def test_pair_matches_matrix_and_broadcasts_negatives(name):
    torch.manual_seed(0)
    sim = make_similarity(name, 8)
    h, items = torch.randn(5, 8), torch.randn(7, 8)
    full = sim.matrix(h, items)  # [5, 7]
    idx = torch.randint(7, (5, 3))
    torch.testing.assert_close(sim.pair(h[:, None, :], items[idx]), full.gather(1, idx))


def test_adaptive_init_metrics_and_gradients():
    sim = make_similarity("adaptive", 4, alpha=0.5, beta=0.3, gamma=0.2, temperature=1.0)
    assert sim.metrics() == pytest.approx({"sim_alpha": 0.5, "sim_beta": 0.3, "sim_gamma": 0.2, "sim_temperature": 1.0})
    sim.pair(torch.randn(3, 4), torch.randn(3, 4)).sum().backward()
    assert all(p.grad is not None for p in (sim.alpha, sim.beta, sim.gamma, sim.temperature))
    assert make_similarity("dot", 4).metrics() == {}


def test_unknown_name_lists_valid():
    with pytest.raises(TunerError, match="valid: dot, cosine, scaled_dot, bilinear, adaptive"):
        make_similarity("euclid", 4)
