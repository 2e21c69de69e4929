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
