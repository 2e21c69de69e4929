"""Adding a sampled ranking loss is one function plus one registry entry (README, "Add a loss").

The toy loss below is registered by monkeypatching RANKING_LOSSES and nothing else: the models'
configs, their validation, their training loops and the sweep spec all pick it up from there.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import write
from trainables import MODELS, synthetic
from trainables.errors import TunerError
from trainables.losses import RANKING_LOSSES, SAMPLED, RankingLoss, accepted
from trainables.loop import fit
from tuner import spec as specmod

CALLS = {"n": 0}


def toy_hinge(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Margin ranking: mean over (positive, negative) pairs of max(0, 1 - pos + neg); pos [B], neg [B, K]."""
    CALLS["n"] += 1
    return F.relu(1.0 - pos[:, None] + neg).mean()


@pytest.fixture
def toy(monkeypatch):
    """The one registry entry: a sampled loss for sasrec and two_tower."""
    monkeypatch.setitem(RANKING_LOSSES, "toy_hinge", RankingLoss(toy_hinge, SAMPLED, ("sasrec", "two_tower")))
    CALLS["n"] = 0


TINY = {
    "sasrec": {"hidden_units": 8, "num_heads": 1, "num_blocks": 1, "maxlen": 8, "batch_size": 32},
    "two_tower": {"embed_dim": 8, "out_dim": 8, "tower_hidden": 8, "history_len": 4, "batch_size": 64},
}


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_registered_toy_loss_configures_and_trains(toy, model):
    entry = MODELS[model]
    cfg = entry.make_config({"loss": "toy_hinge", "num_negatives": 3})  # validate() accepts it, with negatives
    assert cfg.loss == "toy_hinge" and cfg.num_negatives == 3
    data = synthetic.generate(n_users=40, n_items=30, mean_length=6.0, seed=0)
    reports = []
    fit(entry, {**TINY[model], "loss": "toy_hinge", "num_negatives": 3, "epochs": 1}, data,
        lambda m, s: reports.append(m), ks=(10,))
    assert CALLS["n"] > 0  # the model called the toy loss, by its kind
    assert len(reports) == 1 and 0.0 <= reports[0]["train_loss"] < float("inf")


def test_a_model_the_entry_does_not_name_rejects_it(toy):
    with pytest.raises(TunerError) as info:
        MODELS["bpr_mf"].make_config({"loss": "toy_hinge"})
    assert str(info.value).endswith(f"unknown loss 'toy_hinge'; valid: {', '.join(accepted('bpr_mf'))}")
    assert "toy_hinge" not in accepted("bpr_mf")


def test_without_the_entry_the_loss_does_not_exist():
    with pytest.raises(TunerError, match="unknown loss 'toy_hinge'"):
        MODELS["sasrec"].make_config({"loss": "toy_hinge"})


def test_a_sweep_spec_can_search_it(toy, tmp_path):
    path = write(tmp_path, "toy.yaml", """\
        model: two_tower
        space:
          loss: {type: categorical, choices: [bce, toy_hinge]}
          num_negatives: {type: int, low: 1, high: 4, when: {loss: toy_hinge}}
        """)
    spec = specmod.load(path)
    assert spec.space[0].choices == ("bce", "toy_hinge")
