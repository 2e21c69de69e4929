"""Contract of trainables.losses.RANKING_LOSSES, parametrised over every entry.

Every loss stays finite, with finite gradients, on the edge cases a sweep meets (a batch of 1,
one negative, equal scores, ties, logits of +-1e4); its floor is the loss at the extreme logits
and a lower bound inside them; each model accepts exactly the losses whose entry names it, and
trains one epoch with each of them. The negatives knob is num_negatives in every model; the old
names still read, with one deprecation line.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import write
from trainables import MODELS, synthetic
from trainables.config import choices_of
from trainables.errors import TunerError
from trainables.losses import ALL_MODELS, FULL, INBATCH, RANKING_LOSSES, SAMPLED, accepted
from trainables.loop import fit
from tuner import spec as specmod

ENTRIES = sorted(RANKING_LOSSES)
N_ITEMS = 50
TINY = {  # one fast epoch per model on the tiny data below
    "bpr_mf": {"dim": 4, "batch_size": 64},
    "multimodal": {"dim": 8, "batch_size": 64},
    "sasrec": {"hidden_units": 8, "num_heads": 1, "num_blocks": 1, "maxlen": 8, "batch_size": 32},
    "two_tower": {"embed_dim": 8, "out_dim": 8, "tower_hidden": 8, "history_len": 4, "batch_size": 64},
}


def extra_kwargs(name: str) -> dict:
    """The loss's keyword arguments as the first model that accepts it computes them (defaults)."""
    entry = RANKING_LOSSES[name]
    cfg = MODELS[entry.models[0]].make_config({"loss": name})
    return entry.extra(cfg, N_ITEMS) if entry.extra else {}


def edge_cases(kind: str) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of each call shape: sampled (pos [B], neg [B, K]); inbatch/full (logits [B, M], targets [B])."""
    if kind == SAMPLED:
        return {
            "batch of 1, K=1": (torch.tensor([0.3]), torch.tensor([[-0.2]])),
            "all equal": (torch.full((4,), 0.5), torch.full((4, 3), 0.5)),
            "huge +1e4 / -1e4": (torch.full((3,), 1e4), torch.full((3, 2), -1e4)),
            "huge -1e4 / +1e4": (torch.full((3,), -1e4), torch.full((3, 2), 1e4)),
            "ties with negatives": (torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 1.0], [-2.0, 0.0]])),
        }
    return {
        "batch of 1, one candidate": (torch.tensor([[0.7]]), torch.tensor([0])),
        "all equal": (torch.full((4, 5), 0.5), torch.tensor([0, 1, 2, 4])),
        "huge right": (torch.where(torch.eye(3, dtype=torch.bool), 1e4, -1e4), torch.arange(3)),
        "huge wrong": (torch.where(torch.eye(3, dtype=torch.bool), -1e4, 1e4), torch.arange(3)),
        "ties": (torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]]), torch.tensor([1, 0])),
    }


def call(name: str, *args: torch.Tensor) -> torch.Tensor:
    """The loss the way a model calls it: by kind only."""
    entry = RANKING_LOSSES[name]
    if entry.kind == SAMPLED:
        return entry.fn(*args, **extra_kwargs(name))
    if entry.kind == INBATCH:
        return entry.fn(*args, None)
    assert entry.kind == FULL, f"{name}: unknown kind {entry.kind!r}"
    return entry.fn(*args)


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_is_complete(name):
    entry = RANKING_LOSSES[name]
    assert entry.kind in (SAMPLED, INBATCH, FULL)
    assert entry.models and set(entry.models) <= set(ALL_MODELS) <= set(MODELS)
    assert (entry.linear is not None) == (entry.kind == FULL)  # a full loss must be computable blockwise
    for model in entry.models:
        for knob in entry.knobs:
            assert hasattr(MODELS[model].config_cls, knob), f"{model} lacks {name}'s knob {knob}"


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("case", range(5))
def test_finite_loss_and_gradients_on_edge_cases(name, case):
    label, args = list(edge_cases(RANKING_LOSSES[name].kind).items())[case]
    scores = args[0].clone().requires_grad_(True)
    rest = [a.clone().requires_grad_(True) if a.is_floating_point() else a for a in args[1:]]
    loss = call(name, scores, *rest)
    assert loss.dim() == 0 and torch.isfinite(loss), f"{name}, {label}: {loss}"
    loss.backward()
    for t in (scores, *rest):
        if t.is_floating_point() and t.grad is not None:  # None: the loss ignores it (bce_positives' negatives)
            assert torch.isfinite(t.grad).all(), f"{name}, {label}: gradient {t.grad}"
    assert scores.grad is not None, f"{name}: no gradient reaches the scores"


@pytest.mark.parametrize("name", [n for n in ENTRIES if RANKING_LOSSES[n].kind == FULL])
@pytest.mark.parametrize("case", range(5))
def test_full_losses_linear_form_matches_on_edge_cases(name, case):
    logits, targets = list(edge_cases(FULL).values())[case]
    q, k = logits, torch.eye(logits.shape[1])  # q @ k.T == logits
    entry = RANKING_LOSSES[name]
    torch.testing.assert_close(entry.linear(q, k, targets), entry.fn(logits, targets))


@pytest.mark.parametrize("name", [n for n in ENTRIES if RANKING_LOSSES[n].floor is not None])
@pytest.mark.parametrize("s,k", [(1.0, 1), (1.0, 5), (10.0, 3)])
def test_floor_is_the_loss_at_the_extreme_logits_and_a_lower_bound(name, s, k):
    entry = RANKING_LOSSES[name]
    assert entry.kind == SAMPLED, "floor(s, k) is defined for positives at +s and k negatives at -s"
    f64 = dict(dtype=torch.float64)  # the floor at s = 10 is ~1e-8: below float32's resolution of a loss near 0
    best = call(name, torch.full((2,), s, **f64), torch.full((2, k), -s, **f64)).item()
    assert best == pytest.approx(entry.floor(s, k), rel=1e-5)
    gen = torch.Generator().manual_seed(0)
    pos = (torch.rand(64, generator=gen, **f64) * 2 - 1) * s  # [64] in [-s, s]
    neg = (torch.rand(64, k, generator=gen, **f64) * 2 - 1) * s  # [64, k]
    assert call(name, pos, neg).item() >= entry.floor(s, k) - 1e-12


@pytest.mark.parametrize("model", ALL_MODELS)
def test_each_model_accepts_exactly_the_registry_losses(model):
    entry = MODELS[model]
    field = next(f for f in dataclasses.fields(entry.config_cls) if f.name == "loss")
    assert choices_of(field) == accepted(model)
    for name in RANKING_LOSSES:
        if name in accepted(model):
            assert entry.make_config({"loss": name}).loss == name
            continue
        with pytest.raises(TunerError) as info:
            entry.make_config({"loss": name})
        msg = str(info.value)
        assert "\n" not in msg and f"unknown loss {name!r}; valid: {', '.join(accepted(model))}" in msg


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(n_users=40, n_items=N_ITEMS, mean_length=6.0, seed=0)


@pytest.mark.parametrize("model,name", [(m, n) for m in ALL_MODELS for n in accepted(m)])
def test_each_model_trains_an_epoch_with_each_accepted_loss(data, model, name):
    reports = []
    fit(MODELS[model], {**TINY[model], "loss": name, "epochs": 1}, data, lambda m, s: reports.append(m), ks=(10,))
    assert len(reports) == 1 and torch.isfinite(torch.tensor(reports[0]["train_loss"]))


# --- the negatives knob: one name, old names still read ---------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_model_calls_its_negatives_knob_num_negatives(model):
    names = {f.name for f in dataclasses.fields(MODELS[model].config_cls)}
    assert "num_negatives" in names and not names & {"neg_ratio", "n_negatives"}


@pytest.mark.parametrize("model,old", [("two_tower", "neg_ratio"), ("bpr_mf", "n_negatives"),
                                       ("multimodal", "n_negatives")])
def test_old_negatives_name_in_yaml_reads_with_one_deprecation_line(tmp_path, capsys, model, old):
    path = write(tmp_path, f"{model}.yaml", f"model: {model}\nfixed: {{{old}: 3}}\n"
                                             f"space:\n  lr: {{type: float, low: 0.001, high: 0.01}}\n")
    for _ in range(2):  # loading twice still says it once
        spec = specmod.load(path)
    assert spec.fixed["num_negatives"] == 3 and old not in spec.fixed
    err = capsys.readouterr().err
    assert err.count(f"{old} is deprecated; use num_negatives") == 1
    assert f"{path}: {old} is deprecated; use num_negatives\n" in err

    searched = write(tmp_path, f"{model}_space.yaml",
                     f"model: {model}\nspace:\n  {old}: {{type: int, low: 1, high: 4}}\n")
    assert [p.name for p in specmod.load(searched).space] == ["num_negatives"]
    assert MODELS[model].make_config({old: 2}).num_negatives == 2


def test_old_and_new_name_together_is_an_error(tmp_path):
    path = write(tmp_path, "both.yaml", "model: two_tower\nfixed: {neg_ratio: 3, num_negatives: 4}\n")
    with pytest.raises(TunerError, match="neg_ratio is the old name of num_negatives; give only num_negatives"):
        specmod.load(path)
