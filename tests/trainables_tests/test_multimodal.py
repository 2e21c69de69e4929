"""The seed-002 multimodal recommender: training, freezing, the non-finite guard, data hook."""

import json

import numpy as np
import pytest
import torch

from trainables import losses, synthetic
from tuner import spec as specmod
from trainables.errors import TunerError
from trainables import MODELS
from trainables.loop import NonFiniteLoss, fit

ENTRY = MODELS["multimodal"]


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(n_users=120, n_items=50, mean_length=8.0, seed=0)


def run(data, epochs=1, **config):
    history = []
    recipe = fit(ENTRY, {"epochs": epochs, "dim": 16, "batch_size": 128, **config}, data,
                 lambda m, s: history.append(m), ks=(10,))
    return recipe, history


def recipe_for(data, **config):
    cfg = ENTRY.make_config({"dim": 16, "batch_size": 64, **config})
    torch.manual_seed(0)
    return ENTRY.recipe(cfg, data, torch.device("cpu"))


@pytest.mark.parametrize("loss", ["bpr", "ce"])
def test_trains_and_logs_every_term(data, loss):
    # all epochs in phase 1 without warmup: the total loss is the same objective every epoch
    _, h = run(data, epochs=4, loss=loss, warmup_epochs=0, lr=5e-3, alpha_causal_p1=0.01)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["loss_rec"] < h[0]["loss_rec"]
    for k in ("loss_recon", "loss_causal", "loss_diversity", "alpha_recon", "alpha_causal", "alpha_diversity",
              "phase", "grad_norm", "rec_grad_norm", "aux_grad_norm", "grad_ratio", "gate_mean",
              "val_hr_10", "val_ndcg_10"):
        assert all(np.isfinite(m[k]) for m in h), k
    assert h[0]["phase"] == 1.0 and h[0]["alpha_causal"] == 0.01
    assert 0.0 <= h[-1]["loss_causal"] <= 1.0


def test_phases_and_warmup_reach_the_logs(data):
    _, h = run(data, epochs=3, phase1_epochs=1, phase2_epochs=1, warmup_epochs=2)
    assert [m["phase"] for m in h] == [1.0, 2.0, 3.0]
    assert h[0]["alpha_recon"] == pytest.approx(0.005 / 2)  # phase 1, ramp 1/2
    assert h[1]["alpha_causal"] == pytest.approx(0.001)  # phase 2, ramp done
    assert h[2]["alpha_diversity"] == pytest.approx(0.0002)


def test_alpha_zero_freezes_the_terms_own_parameters(data):
    r = recipe_for(data, alpha_recon_p1=0.0, alpha_causal_p1=0.0)  # seed 002 phase 1: causal frozen
    m = r.model
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    out = r.train_epoch(1, torch.Generator().manual_seed(0))
    for mod in (m.decoder, m.pop_probe):
        for p in mod.parameters():
            assert p.grad is None and not p.requires_grad
    for n, p in m.named_parameters():
        if n.startswith(("decoder.", "pop_probe.")):
            assert torch.equal(p, before[n]), n
    assert not torch.equal(m.item_id.weight, before["item_id.weight"])
    assert out["loss_recon"] > 0 and out["alpha_recon"] == 0.0  # still logged, just off

    r2 = recipe_for(data, alpha_recon_p1=0.01, alpha_causal_p1=0.01)  # switched on: they train
    r2.train_epoch(1, torch.Generator().manual_seed(0))
    assert r2.model.decoder.weight.grad is not None and r2.model.pop_probe.weight.grad is not None


def test_causal_probe_gradient_is_reversed(data):
    r = recipe_for(data, alpha_causal_p1=1.0)
    m = r.model
    items = torch.arange(20)
    v = m.fuse(items)
    z = r.log_pop[items]
    losses.squared_correlation(m.probe(v).squeeze(-1), z).backward()
    got = m.pop_probe.weight.grad.clone()
    w = m.pop_probe.weight.detach().clone().requires_grad_(True)
    plain = losses.squared_correlation((v.detach() @ w.T).squeeze(-1), z)
    (want,) = torch.autograd.grad(plain, w)
    assert torch.allclose(got, -want, atol=1e-6)  # the probe ascends rho^2 ...
    m.zero_grad()
    vv = m.fuse(items)
    losses.squared_correlation(m.probe(vv).squeeze(-1), z).backward()
    assert m.item_id.weight.grad.abs().sum() > 0  # ... the item representation descends it


def test_nan_loss_ends_the_trial(data, monkeypatch):
    monkeypatch.setattr(losses, "uniformity", lambda x, t=2.0: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLoss) as e:
        run(data, alpha_diversity_p1=0.1)
    assert str(e.value) == "non-finite loss at epoch 1, step 0"


def test_nan_gradient_ends_the_trial(data, monkeypatch):
    # finite value (0), NaN gradient (d sqrt(u)/du at 0 is inf, times du/dx = 0)
    monkeypatch.setattr(losses, "squared_correlation", lambda x, y: torch.sqrt((x - x.detach()).abs().sum()))
    with pytest.raises(NonFiniteLoss) as e:
        run(data, alpha_causal_p1=0.1)
    assert str(e.value) == "non-finite loss at epoch 1, step 0"


def test_transformer_encoder_and_validation(data):
    _, h = run(data, encoder="transformer", n_heads=2, max_len=10)
    assert np.isfinite(h[0]["val_ndcg_10"])
    with pytest.raises(TunerError, match="divisible"):
        ENTRY.make_config({"encoder": "transformer", "dim": 10, "n_heads": 3})


def test_checkpoint_round_trip(data):
    r = recipe_for(data)
    r.train_epoch(1, torch.Generator().manual_seed(0))
    r2 = recipe_for(data, seed=1)
    r2.load_state_dict(r.state_dict())
    r.model.eval(), r2.model.eval()
    assert torch.allclose(r.score_users("valid", 0, 10), r2.score_users("valid", 0, 10))


def test_load_data_needs_item_features(tmp_path):
    seqs = tmp_path / "seq.txt"
    seqs.write_text("u1 a b c d\nu2 b c d e\nu3 a c e f\n")
    spec = specmod.parse({"model": "multimodal", "data": {"source": "file", "path": str(seqs)}}, str(tmp_path / "s.yaml"))
    with pytest.raises(TunerError, match="item_attributes"):
        ENTRY.dataset(spec)
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"a": [1, 2], "b": [2], "c": [3], "d": [1], "e": [4], "f": [4, 5]}))
    spec = specmod.parse({"model": "multimodal", "data": {"source": "file", "path": str(seqs),
                                                          "item_attributes": str(attrs)}}, str(tmp_path / "s.yaml"))
    d = ENTRY.dataset(spec)
    assert d.item_features.shape == (6, 5) and d.item_features.sum() == 8
    _, h = run(d, loss="ce")  # multi-hot features: bce reconstruction, embedding-bag content
    assert np.isfinite(h[0]["loss_recon"])


def test_search_space_validates():
    spec = specmod.load("search_spaces/multimodal_phases.yaml")
    assert spec.model == "multimodal" and spec.metric.name == "val_ndcg_10"
    assert {p.name for p in spec.space} >= {"loss", "num_negatives", "alpha_causal_p2", "phase1_epochs"}
