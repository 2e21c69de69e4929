"""BPR-MF: one table lookup per step gives the same scores everywhere; full CE runs blockwise."""

import torch

from trainables import MODELS
from trainables.bpr_mf import MF
from tuner import synthetic
from tuner.losses import full_ce


def test_forward_factors_and_score_all_agree():
    torch.manual_seed(0)
    m = MF(5, 9, 4)
    with torch.no_grad():
        m.item.weight[:, 4].normal_()  # a non-zero bias column
    users, items = torch.tensor([0, 3, 4]), torch.tensor([[1, 8], [0, 2], [5, 5]])
    scores, p, q = m(users, items)
    want = (m.user.weight[users][:, None, :] * m.item.weight[items][..., :4]).sum(-1) + m.item.weight[items][..., 4]
    torch.testing.assert_close(scores, want)
    torch.testing.assert_close(m.score_all(users).gather(1, items), want)
    assert p.shape == (3, 4) and q.shape == (3, 2, 4)  # the factors an L2 penalty sees: no bias column


def test_ce_epoch_equals_plain_ce_on_score_all():
    data = synthetic.generate(n_users=40, n_items=30, mean_length=6)
    entry = MODELS["bpr_mf"]
    cfg = entry.make_config({"loss": "ce", "dim": 8, "batch_size": 10**6, "epochs": 1})  # one batch: one step
    torch.manual_seed(0)
    r = entry.recipe(cfg, data, torch.device("cpu"))
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    got = r.train_epoch(1, gen)["train_loss"]
    r.model.load_state_dict(before)
    want = full_ce(r.model.score_all(r.users), r.items).item()  # loss before the step, every interaction
    assert abs(got - want) < 1e-5


def _steps(opt_cls, sparse, batches, **kw):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(6, 3, sparse=sparse)
    opt = opt_cls(emb.parameters(), lr=0.1, **kw)
    for rows in batches:
        opt.zero_grad(set_to_none=True)
        (emb(torch.tensor(rows)) * torch.arange(3.0)).pow(2).sum().backward()
        opt.step()
    return emb.weight.detach(), opt


def test_lazy_adam_is_adam_when_every_row_is_looked_up():
    from trainables.loop import LazyAdam

    batches = [[0, 1, 2, 3, 4, 5, 5, 1]] * 3  # every row, with duplicates: gradients must sum
    lazy, _ = _steps(LazyAdam, True, batches)
    dense, _ = _steps(torch.optim.Adam, False, batches)
    torch.testing.assert_close(lazy, dense)


def test_lazy_adam_matches_sparse_adam_and_leaves_other_rows_alone():
    from trainables.loop import LazyAdam

    batches = [[0, 2, 2], [2, 4], [0, 0, 4]]
    lazy, opt = _steps(LazyAdam, True, batches)
    ref, _ = _steps(torch.optim.SparseAdam, True, batches)
    torch.testing.assert_close(lazy, ref)
    torch.manual_seed(0)
    init = torch.nn.Embedding(6, 3).weight.detach()
    torch.testing.assert_close(lazy[[1, 3, 5]], init[[1, 3, 5]])  # never looked up: untouched
    assert not torch.equal(lazy[[0, 2, 4]], init[[0, 2, 4]])
    assert float(opt.state_dict()["state"][0]["step"]) == 3


def test_sparse_adam_trains_bpr_and_refuses_full_ce():
    import pytest

    from tuner.errors import TunerError

    data = synthetic.generate(n_users=60, n_items=40, mean_length=8)
    entry = MODELS["bpr_mf"]
    cfg = entry.make_config({"optimizer": "sparse_adam", "dim": 8, "batch_size": 64, "lr": 0.05})
    r = entry.recipe(cfg, data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    losses = [r.train_epoch(e, gen)["train_loss"] for e in range(1, 6)]
    assert losses[-1] < 0.8 * losses[0]
    assert r.model.item.weight.grad.is_sparse
    with pytest.raises(TunerError, match="sparse_adam needs a sampled loss"):
        entry.make_config({"optimizer": "sparse_adam", "loss": "ce"})
