"""BPR-MF: one table lookup per step gives the same scores everywhere; full CE runs blockwise."""

import pytest
import torch

from trainables import MODELS
from trainables.bpr_mf import MF
from trainables import synthetic
from trainables.losses import full_ce


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


@pytest.mark.parametrize("fused", [False, True])
def test_sparse_adam_trains_bpr_and_refuses_full_ce(fused):
    from trainables.errors import TunerError

    data = synthetic.generate(n_users=60, n_items=40, mean_length=8)
    entry = MODELS["bpr_mf"]
    cfg = entry.make_config({"optimizer": "sparse_adam", "dim": 8, "batch_size": 64, "lr": 0.05})
    r = entry.recipe(cfg, data, torch.device("cpu"))
    if fused:
        _need_kernels(r)
    else:
        r.fused = None  # the torch path: LazyAdam.step on nn.Embedding's sparse gradients
    gen = torch.Generator().manual_seed(0)
    losses = [r.train_epoch(e, gen)["train_loss"] for e in range(1, 6)]
    assert losses[-1] < 0.8 * losses[0]
    assert (r.model.item.weight.grad is None) if fused else r.model.item.weight.grad.is_sparse
    with pytest.raises(TunerError, match="sparse_adam needs a sampled loss"):
        entry.make_config({"optimizer": "sparse_adam", "loss": "ce"})


def _need_kernels(recipe):
    if recipe.fused is None:
        pytest.skip("no C compiler here: the fused step is off and the torch path runs")


@pytest.mark.parametrize("loss,k,wd", [("bpr", 1, 0.0), ("bpr", 3, 0.01), ("bce", 2, 0.0), ("sampled_softmax", 4, 0.05)])
def test_fused_step_equals_lazy_adam_on_sparse_gradients(loss, k, wd):
    """Same losses, tables and Adam moments as the torch path, epoch after epoch (duplicate rows in
    every batch: a tiny catalogue), so either path can resume the other's checkpoint."""
    data = synthetic.generate(n_users=50, n_items=30, mean_length=8)
    entry = MODELS["bpr_mf"]
    cfg = entry.make_config({"optimizer": "sparse_adam", "loss": loss, "num_negatives": k, "weight_decay": wd,
                             "dim": 6, "batch_size": 32, "lr": 0.03})
    runs = []
    for fused in (True, False):
        torch.manual_seed(0)
        r = entry.recipe(cfg, data, torch.device("cpu"))
        if fused:
            _need_kernels(r)
        else:
            r.fused = None
        gen = torch.Generator().manual_seed(0)
        runs.append(([r.train_epoch(e, gen)["train_loss"] for e in range(1, 4)], r))
    (loss_f, rf), (loss_t, rt) = runs
    assert loss_f == pytest.approx(loss_t, rel=1e-5)
    # 30 steps of float32 in another summation order: differences of a few ulps, grown by Adam
    torch.testing.assert_close(rf.model.state_dict(), rt.model.state_dict(), rtol=1e-4, atol=1e-5)
    sf, st = rf.optimizer.state_dict(), rt.optimizer.state_dict()
    assert sf["param_groups"] == st["param_groups"]
    torch.testing.assert_close(sf["state"], st["state"], rtol=1e-4, atol=1e-6)
    assert float(sf["state"][0]["step"]) == 3 * -(-data.n_train // 32)  # one Adam step per batch


def test_fused_step_leaves_rows_it_did_not_look_up():
    data = synthetic.generate(n_users=50, n_items=30, mean_length=8)
    entry = MODELS["bpr_mf"]
    torch.manual_seed(0)
    r = entry.recipe(entry.make_config({"optimizer": "sparse_adam", "num_negatives": 2, "dim": 4}), data,
                     torch.device("cpu"))
    _need_kernels(r)
    before = [t.weight.detach().clone() for t in (r.model.user, r.model.item)]
    users, items = torch.tensor([3, 3, 7]), torch.tensor([[1, 2, 2], [5, 1, 9], [0, 2, 4]])  # duplicates sum
    pos, neg, _ = r.fused.scores(users, items)
    torch.testing.assert_close(torch.cat([pos[:, None], neg], 1), r.model(users, items)[0].detach())
    r.fused.step(users, items, *torch.autograd.grad(r.loss.fn(pos, neg), (pos, neg)), 0.0)
    for t, old, seen in ((r.model.user, before[0], [3, 7]), (r.model.item, before[1], [0, 1, 2, 4, 5, 9])):
        moved = (t.weight.detach() != old).any(1)
        assert moved.nonzero().flatten().tolist() == seen
    assert (r.fused.slots[0] == -1).all() and (r.fused.slots[1] == -1).all()  # workspace ready for the next step


def test_kernels_fall_back_when_off_or_unbuildable(monkeypatch, tmp_path):
    from trainables import kernels

    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path))
    try:
        kernels.load.cache_clear()
        monkeypatch.setenv("TUNER_KERNELS", "0")
        assert kernels.load() is None
        kernels.load.cache_clear()
        monkeypatch.setenv("TUNER_KERNELS", "1")
        monkeypatch.setenv("CC", "false")  # a compiler that fails: one warning, then the torch path
        with pytest.warns(RuntimeWarning, match="C kernels unavailable"):
            assert kernels.load() is None
        r = MODELS["bpr_mf"].recipe(MODELS["bpr_mf"].make_config({"optimizer": "sparse_adam"}),
                                    synthetic.generate(n_users=20, n_items=10, mean_length=4), torch.device("cpu"))
        assert r.fused is None
    finally:
        kernels.load.cache_clear()
