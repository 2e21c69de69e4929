"""Every loss against a value computed by hand on a tiny tensor."""

import math

import pytest
import torch

from trainables.errors import TunerError
from trainables.losses import (
    RANKING_LOSSES,
    accepted,
    bce,
    bpr,
    full_ce,
    gbce,
    gbce_beta,
    get_ranking_loss,
    inbatch_softmax,
    linear_ce,
    sampled_softmax,
)


def sp(x: float) -> float:  # softplus
    return math.log1p(math.exp(x))


POS = torch.tensor([2.0, -1.0])
NEG = torch.tensor([[1.0, 0.0], [0.5, -2.0]])


def test_bpr_by_hand():
    want = (sp(1 - 2) + sp(0 - 2) + sp(0.5 + 1) + sp(-2 + 1)) / 4
    assert bpr(POS, NEG).item() == pytest.approx(want, rel=1e-6)


def test_bce_by_hand():
    want = (sp(-2) + sp(1)) / 2 + (sp(1) + sp(0) + sp(0.5) + sp(-2)) / 4
    assert bce(POS, NEG).item() == pytest.approx(want, rel=1e-6)


def test_sampled_softmax_by_hand():
    row0 = -2 + math.log(math.exp(2) + math.exp(1) + math.exp(0))
    row1 = 1 + math.log(math.exp(-1) + math.exp(0.5) + math.exp(-2))
    assert sampled_softmax(POS, NEG).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_full_ce_by_hand():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    targets = torch.tensor([2, 1])
    lse0 = math.log(1 + math.e + math.e**2)
    lse1 = math.log(math.e**3 + 2)
    assert full_ce(logits, targets).item() == pytest.approx(((lse0 - 2) + (lse1 - 0)) / 2, rel=1e-6)


@pytest.mark.parametrize("block", [1, 7, 10**9])  # one row per block, a ragged last block, everything at once
def test_linear_ce_equals_full_ce_with_gradients(monkeypatch, block):
    import trainables.losses as L

    torch.manual_seed(0)
    q = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    k = (3 * torch.randn(30, 4, dtype=torch.float64)).requires_grad_()  # large logits: needs the max shift
    t = torch.randint(30, (10,))
    want = full_ce(q @ k.T, t)
    gq, gk = torch.autograd.grad(want * 2.5, (q, k))  # a non-unit upstream gradient is scaled through
    monkeypatch.setattr(L, "LINEAR_CE_BLOCK", block * 30)
    got = linear_ce(q, k, t)
    hq, hk = torch.autograd.grad(got * 2.5, (q, k))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(hq, gq)
    torch.testing.assert_close(hk, gk)


def test_linear_ce_grads_only_where_needed():
    q, k, t = torch.randn(5, 3), torch.randn(8, 3, requires_grad=True), torch.tensor([0, 1, 2, 3, 7])
    (gk,) = torch.autograd.grad(linear_ce(q, k, t), (k,))  # q is data: only k gets a gradient
    torch.testing.assert_close(gk, torch.autograd.grad(full_ce(q @ k.T, t), (k,))[0])
    with torch.no_grad():  # evaluation: the value alone
        torch.testing.assert_close(linear_ce(q, k, t), full_ce(q @ k.T, t))


def test_gbce_by_hand_and_beta_formula():
    beta = 0.25
    want = (beta * sp(-2) + sp(1) + sp(0) + beta * sp(1) + sp(0.5) + sp(-2)) / 2
    assert gbce(POS, NEG, beta=beta).item() == pytest.approx(want, rel=1e-6)
    # beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = k / (N - 1)
    alpha = 4 / 99
    assert gbce_beta(4, 100, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert gbce_beta(4, 100, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(4, 100, 1.0) == pytest.approx(alpha)  # t = 1: fully calibrated
    assert gbce_beta(500, 100, 0.75) == pytest.approx(1.0)  # alpha capped at 1


def test_gbce_equals_bce_on_the_papers_transformed_positive_logit():
    """gSASRec: s' = -log(sigmoid(s)^-beta - 1) makes plain BCE equal to gBCE's positive term."""
    s = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0], dtype=torch.float64)
    beta = 0.3
    s_prime = -torch.log(torch.sigmoid(s).pow(-beta) - 1)
    torch.testing.assert_close(torch.nn.functional.softplus(-s_prime), beta * torch.nn.functional.softplus(-s))
    no_neg = torch.full((5, 1), -1e4, dtype=torch.float64)  # softplus(-1e4) = 0
    assert gbce(s, no_neg, beta).item() == pytest.approx((beta * torch.nn.functional.softplus(-s)).mean().item())


def test_gbce_sums_negatives_and_beta_one_is_bce_with_summed_negatives():
    k = NEG.shape[1]
    want = sp(-2) / 2 + sp(1) / 2 + (sp(1) + sp(0) + sp(0.5) + sp(-2)) / 2
    assert gbce(POS, NEG).item() == pytest.approx(want, rel=1e-6)
    assert k == 2


def test_infonce_by_hand_with_and_without_logq():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 0])
    rows = [math.log(math.e + 1) - 1, math.log(1 + math.e**2) - 2, math.log(2 * math.e) - 1]
    assert inbatch_softmax(logits, targets).item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    log_q = torch.tensor([math.log(0.75), math.log(0.25)])
    adj = logits - log_q  # frequent item 0 is penalised, rare item 1 boosted
    want = torch.nn.functional.cross_entropy(adj, targets).item()
    r0 = -(adj[0, 0] - torch.logsumexp(adj[0], 0)).item()
    assert inbatch_softmax(logits, targets, log_q).item() == pytest.approx(want, rel=1e-6)
    assert r0 == pytest.approx(-(1 - math.log(0.75)) + math.log(math.exp(1 - math.log(0.75)) + math.exp(-math.log(0.25))))


def test_registry():
    assert RANKING_LOSSES["gbce"].kind == "sampled" and RANKING_LOSSES["infonce"].kind == "inbatch"
    assert "gbce" not in accepted("bpr_mf")  # bpr_mf is not offered losses it cannot feed
    with pytest.raises(TunerError, match="valid: .*gbce.*infonce"):
        get_ranking_loss("nope")
    with pytest.raises(TunerError, match="^unknown loss 'gbce'; valid: " + ", ".join(accepted("bpr_mf")) + "$"):
        get_ranking_loss("gbce", "bpr_mf")
