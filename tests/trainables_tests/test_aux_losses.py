"""The auxiliary and classification losses of trainables/losses.py against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainables import losses
from trainables.errors import TunerError

P = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
T = torch.tensor([[1.0, 0.0], [0.0, 4.0]])  # differences 0, 2, 3, 0


def test_reconstruction_mse():
    assert losses.reconstruction(P, T, "mse").item() == pytest.approx((0 + 4 + 9 + 0) / 4)


def test_reconstruction_smooth_l1():
    # |d| >= 1: |d| - 0.5 -> 1.5, 2.5; zeros stay 0
    assert losses.reconstruction(P, T, "smooth_l1").item() == pytest.approx((1.5 + 2.5) / 4)
    # |d| < 1: 0.5 d^2
    assert losses.reconstruction(torch.tensor([0.5]), torch.tensor([0.0]), "smooth_l1").item() == pytest.approx(0.125)


def test_reconstruction_bce_on_logits():
    got = losses.reconstruction(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 1.0]]), "bce")
    assert got.item() == pytest.approx((math.log(2.0) + math.log(4.0 / 3.0)) / 2)


def test_reconstruction_unknown_kind():
    with pytest.raises(TunerError, match="unknown reconstruction loss"):
        losses.reconstruction(P, T, "l3")


def test_squared_correlation():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert losses.squared_correlation(x, 2 * x + 1).item() == pytest.approx(1.0, abs=1e-6)
    assert losses.squared_correlation(x, -x).item() == pytest.approx(1.0, abs=1e-6)
    # centred: x [-1, 0, 1], y [-1, 1, 0]: cov 1, var 2 and 2 -> rho 0.5
    assert losses.squared_correlation(x, torch.tensor([1.0, 3.0, 2.0])).item() == pytest.approx(0.25, abs=1e-6)
    assert losses.squared_correlation(x, torch.ones(3)).item() == 0.0  # constant: no correlation, no NaN


def test_uniformity():
    x = torch.tensor([[2.0, 0.0], [0.0, 0.5], [-1.0, 0.0]])  # normalised: e1, e2, -e1
    # squared distances: e1-e2 2, e1-(-e1) 4, e2-(-e1) 2; t = 2
    want = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert losses.uniformity(x, t=2.0).item() == pytest.approx(want, rel=1e-5)
    assert losses.uniformity(torch.ones(3, 2)).item() == pytest.approx(0.0, abs=1e-6)  # all coincide


def test_view_info_nce():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = identity / 1: each row -log(e / (e + 1)) = log(1 + e^-1) = 0.3133 (ANCHORS.md)
    assert losses.view_info_nce(a, 3 * a, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # swapped pairs: the positive is the off-diagonal
    assert losses.view_info_nce(a, b, temperature=1.0).item() == pytest.approx(math.log(1 + math.e), rel=1e-5)


def test_gate_regularization():
    g = torch.tensor([0.5, 1.0, 0.0, 0.75])
    assert losses.gate_regularization(g).item() == pytest.approx((0 + 0.25 + 0.25 + 0.0625) / 4)


LOGITS = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # p_y: 1/2 and 3/4
Y = torch.tensor([0, 1])


def test_classification_ce_and_weights():
    l1, l2 = math.log(2.0), math.log(4.0 / 3.0)
    assert losses.classification(LOGITS, Y, "ce").item() == pytest.approx((l1 + l2) / 2)
    w = torch.tensor([1.0, 3.0])
    got = losses.classification(LOGITS, Y, "ce", class_weights=w).item()
    assert got == pytest.approx((1 * l1 + 3 * l2) / 4)
    assert got == pytest.approx(F.cross_entropy(LOGITS, Y, weight=w).item())  # PyTorch's convention


def test_classification_focal():
    l1, l2 = math.log(2.0), math.log(4.0 / 3.0)
    want = (0.5**2 * l1 + 0.25**2 * l2) / 2
    assert losses.classification(LOGITS, Y, "focal", gamma=2.0).item() == pytest.approx(want)
    x, y = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 5
    assert losses.classification(x, y, "focal", gamma=0.0).item() == pytest.approx(losses.classification(x, y, "ce").item())


def test_classification_bce_one_vs_rest():
    # sample 1: logits (0, 0), target class 0: both BCE terms log 2
    # sample 2: logits (0, ln 3), class 1: log 2 (class 0 as negative) and log(4/3) (class 1 positive)
    want = (math.log(2.0) + (math.log(2.0) + math.log(4.0 / 3.0)) / 2) / 2
    assert losses.classification(LOGITS, Y, "bce").item() == pytest.approx(want)


def test_classification_unknown_kind():
    with pytest.raises(TunerError, match="unknown classification loss"):
        losses.classification(LOGITS, Y, "hinge")
