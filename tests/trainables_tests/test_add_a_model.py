"""Adding a ranking model takes three places, as README "Add a model" says: one module (a Config
extending TrainConfig, a RankingRecipe), one MODELS entry and a search-space YAML. This test
does exactly that with a toy model and trains it from its spec, without Ray."""

from __future__ import annotations

import importlib
import math
import sys

import pytest

from helpers import raises_tuner_error, torch_threads, write
from trainables import MODELS, ModelEntry, get_model
from trainables.loop import fit
from tuner import spec as specmod

# 1. the module: popularity prior plus learned user/item embeddings
TOY_MODULE = '''
"""Toy: score(u, i) = <p_u, q_i> + log(1 + training count of i), trained with BPR on one
uniform negative per positive."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import bounded
from trainables.loop import RankingRecipe, adam
from trainables.train_config import TrainConfig


@dataclass(frozen=True)
class Config(TrainConfig):
    dim: int = bounded(8, low=1)


class ToyRecipe(RankingRecipe):
    def __init__(self, cfg, data, device):
        super().__init__(cfg, data, device)
        self.model = nn.ModuleDict({"user": nn.Embedding(data.n_users, cfg.dim),
                                    "item": nn.Embedding(data.n_items, cfg.dim)}).to(device)
        self.optimizer = adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.log_pop = torch.log1p(torch.as_tensor(data.train_counts(), dtype=torch.float32, device=device))  # [N]
        self.users = torch.as_tensor(data.train_users(), device=device)  # [nnz]
        self.items = torch.as_tensor(data.train_items, device=device)  # [nnz]

    def train_epoch(self, epoch, gen):
        order = torch.randperm(len(self.users), generator=gen, device=self.device)
        total = []
        for step, start in enumerate(range(0, len(order), self.cfg.batch_size)):
            b = order[start : start + self.cfg.batch_size]
            p = self.model["user"](self.users[b])  # [B, D]
            neg = torch.randint(self.data.n_items, b.shape, generator=gen, device=self.device)  # [B]
            s_pos, s_neg = ((p * self.model["item"](i)).sum(-1) + self.log_pop[i] for i in (self.items[b], neg))
            total.append(self.optimize(F.softplus(s_neg - s_pos).mean(), epoch, step))
        return {"train_loss": float(sum(total) / max(len(total), 1))}

    @torch.no_grad()
    def score_users(self, split, start, stop):
        return self.model["user"].weight[start:stop] @ self.model["item"].weight.T + self.log_pop  # [B, N]
'''

# 3. its search space (the keys are the Config's fields: base training knobs and `dim`)
SPACE = """\
model: toy_pop
data: {synthetic: {n_users: 150, n_items: 60, mean_length: 8, seed: 1}}
eval: {ks: [5, 10]}
metric: {name: val_ndcg_10}
fixed: {epochs: 2, batch_size: 64}
space:
  dim: {type: int, low: 4, high: 16}
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_pop.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_pop")
    # 2. the registry entry
    monkeypatch.setitem(MODELS, "toy_pop", ModelEntry("toy_pop", module.Config, module.ToyRecipe))
    yield module
    sys.modules.pop("toy_pop", None)  # the next test imports its own copy


def test_a_toy_model_is_one_module_one_entry_one_space(toy, tmp_path):
    spec = specmod.load(write(tmp_path, "toy.yaml", SPACE))
    entry = get_model(spec.model)
    assert entry.config_cls is toy.Config and [p.name for p in spec.space] == ["dim", "lr"]
    assert spec.max_epochs() == 2
    data = entry.dataset(spec)  # the default loader: the embedded generator
    config = {**spec.fixed, "dim": 8, "lr": 0.05}  # one point of the space, as a trial gets it
    reports = []
    with torch_threads(1):
        fit(entry, config, data, lambda m, s: reports.append(m), ks=spec.eval.ks, batch_users=64)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert set(entry.metric_names(spec.eval.ks)) <= set(reports[-1])  # ranking metrics for free
    assert all(math.isfinite(r[spec.metric.name]) for r in reports)
    assert reports[1]["train_loss"] < reports[0]["train_loss"]  # it learns
    # the popularity baseline the driver compares against comes with the RankingRecipe/ModelEntry default
    assert set(entry.baseline(data, spec.eval.ks)) == {"valid", "test"}


def test_the_toy_config_is_what_the_spec_checks(toy, tmp_path):
    bad = SPACE.replace("  dim:", "  dimm:")
    msg = raises_tuner_error(specmod.load, write(tmp_path, "toy.yaml", bad))
    assert "space.dimm" in msg and "unknown knob" in msg
    assert "dim" in msg.split("valid:")[1] and "grad_clip" in msg  # its own knob and the base ones
    msg = raises_tuner_error(specmod.load, write(tmp_path, "toy2.yaml", SPACE.replace("epochs: 2", "epochs: 0")))
    assert "fixed.epochs" in msg and ">= 1" in msg
