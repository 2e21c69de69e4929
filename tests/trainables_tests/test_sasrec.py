"""SASRec trainable: every accepted loss x similarity trains; invalid combinations are rejected."""

import itertools

import numpy as np
import optuna
import pytest
import torch

from trainables import MODELS
from trainables import sasrec as S
from trainables.loop import fit
from tuner import spec as specmod
from trainables import synthetic
from trainables.errors import TunerError
from tuner.space import sample
from trainables.similarity import SIMILARITIES
from trainables.losses import RANKING_LOSSES, accepted

ENTRY = MODELS["sasrec"]
TINY = dict(maxlen=10, hidden_units=16, num_blocks=1, num_heads=2, dropout=0.0, batch_size=16, lr=5e-3)


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(n_users=60, n_items=40, mean_length=8)


def recipe(data, **knobs):
    torch.manual_seed(0)
    return ENTRY.recipe(ENTRY.make_config({**TINY, **knobs}), data, torch.device("cpu"))


def fixed_batch_loss(r, rows, seed=0):
    gen = torch.Generator().manual_seed(seed)  # same negatives before and after training
    return r.batch_loss(r.inputs[rows], r.targets[rows], rows, gen)


LOSS_NAMES = accepted("sasrec")  # the registry is the single source
RANKING_KIND = {name: RANKING_LOSSES[name].kind for name in LOSS_NAMES}
COMBOS = [
    (loss, sim) for loss, sim in itertools.product(LOSS_NAMES, SIMILARITIES)
    if RANKING_LOSSES[loss].bounded_logits_ok or sim != "cosine"
]


@pytest.mark.parametrize("loss,sim", COMBOS)
def test_every_accepted_combination_trains(data, loss, sim):
    knobs = dict(loss=loss, similarity=sim)
    if RANKING_KIND[loss] == "sampled":
        knobs["num_negatives"] = 4
    ENTRY.make_config({**TINY, **knobs})  # validate accepts it
    r = recipe(data, **knobs)
    rows = r.train_rows[:16]
    before = fixed_batch_loss(r, rows).item()
    gen = torch.Generator().manual_seed(1)
    for _ in range(15):
        loss_ = r.batch_loss(r.inputs[rows], r.targets[rows], rows, gen)
        r.optimizer.zero_grad()
        loss_.backward()
        r.optimizer.step()
    after = fixed_batch_loss(r, rows).item()
    assert np.isfinite(before) and after < before, (loss, sim, before, after)
    # shapes: hidden states [B, L, d]; scores [B, N] for a block of users
    h = r.model(r.inputs[rows])
    assert h.shape == (16, TINY["maxlen"], TINY["hidden_units"])
    r.model.eval()
    assert r.score_users("valid", 3, 11).shape == (8, data.n_items)
    assert set(r.extra_metrics()) == ({"sim_alpha", "sim_beta", "sim_gamma", "sim_temperature"} if sim == "adaptive" else set())


@pytest.mark.parametrize("knobs", [
    dict(sampler="popularity", pop_power=0.75),
    dict(sampler="mixed", popular_ratio=0.5, exclude_seen=False),
    dict(loss="gbce", num_negatives=8, gbce_t=0.5, similarity="adaptive", fusion_temperature=2.0),
    dict(loss="infonce", logq_correction=True),
    dict(loss="ce", norm_first=False, bucket_by_length=False),
])
def test_fit_runs_epochs_and_reports(data, knobs):
    out = []
    fit(ENTRY, {**TINY, **knobs, "epochs": 6}, data, lambda m, s: out.append(m))
    assert len(out) == 6 and out[-1]["train_loss"] < out[0]["train_loss"]
    assert 0.0 <= out[-1]["val_ndcg_10"] <= 1.0


@pytest.mark.parametrize("knobs,match", [
    (dict(loss="gbce", similarity="cosine"), "cosine with loss gbce"),
    (dict(loss="ce", sampler="popularity"), "sampler.*no effect with loss ce"),
    (dict(loss="infonce", num_negatives=5), "num_negatives.*no effect with loss infonce"),
    (dict(loss="ce", exclude_seen=False), "exclude_seen"),
    (dict(loss="infonce", shared_negatives=True), "shared_negatives.*no effect with loss infonce"),
    (dict(loss="bce", sampler="uniform", pop_power=0.5), "pop_power.*sampler uniform"),
    (dict(loss="bce", sampler="popularity", popular_ratio=0.5), "popular_ratio.*only mixed"),
    (dict(loss="bce", gbce_t=0.5), "gbce_t.*only gbce"),
    (dict(loss="bce", logq_correction=True), "logq_correction"),
    (dict(similarity="dot", fusion_alpha=0.9), "fusion_alpha.*only adaptive"),
    (dict(hidden_units=30, num_heads=4), "does not divide"),
    (dict(loss="softmax"), "unknown loss 'softmax'; valid: " + ", ".join(accepted("sasrec"))),
    (dict(similarity="l2"), "unknown similarity 'l2'; valid: dot, cosine"),
    (dict(sampler="hard"), "unknown sampler 'hard'; valid: uniform, popularity, mixed"),
])
def test_invalid_combinations_are_rejected(knobs, match):
    with pytest.raises(TunerError, match=match):
        ENTRY.make_config(knobs)


def test_left_padded():
    indptr, items = np.array([0, 3, 4, 4 + 6]), np.array([1, 2, 3, 7, 10, 11, 12, 13, 14, 15])
    out = S.left_padded(indptr, items, 4, pad=99)
    np.testing.assert_array_equal(out, [[99, 1, 2, 3], [99, 99, 99, 7], [12, 13, 14, 15]])


def test_training_windows_are_next_item_pairs(data):
    r = recipe(data)
    u = 5
    seq = data.train_items[data.train_indptr[u]:data.train_indptr[u + 1]][-(TINY["maxlen"] + 1):]
    inp, tgt = r.inputs[u], r.targets[u]
    keep = inp != data.n_items
    np.testing.assert_array_equal(inp[keep].numpy(), seq[:-1])
    np.testing.assert_array_equal(tgt[keep].numpy(), seq[1:])


def test_causal_and_padding_invariant(data):
    r = recipe(data)
    r.model.eval()
    seq = r.inputs[:4].clone()
    h = r.model(seq)
    changed = seq.clone()
    changed[:, -1] = 0  # a different last item must not change earlier states
    torch.testing.assert_close(r.model(changed)[:, :-1], h[:, :-1])
    # extra left padding changes nothing: a user's score is independent of its block
    full = r.score_users("valid", 0, 20)
    for a, b in ((0, 1), (7, 9), (19, 20)):
        torch.testing.assert_close(r.score_users("valid", a, b), full[a:b], rtol=1e-4, atol=1e-5)


def test_eval_sees_the_splits_history(data):
    r = recipe(data)
    seqs = r.eval_sequences("test")
    indptr, items = data.sequences("test")
    last = seqs[:, -1].numpy()
    np.testing.assert_array_equal(last, data.valid)  # the test history ends with the validation item
    np.testing.assert_array_equal(r.eval_sequences("valid")[:, -1].numpy(), items[indptr[1:] - 2])


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_blockwise_full_ce_matches_plain_ce(data, monkeypatch, similarity):
    """ce runs blockwise on the head's factors; value and every gradient equal CE on the full logits."""
    import trainables.losses as L

    r = recipe(data, loss="ce", similarity=similarity)
    rows = r.train_rows[:16]
    monkeypatch.setattr(L, "LINEAR_CE_BLOCK", 3 * data.n_items)  # 3 positions per block
    blockwise = fixed_batch_loss(r, rows)
    blockwise.backward()
    grads = {n: p.grad.clone() for n, p in r.model.named_parameters() if p.grad is not None}
    r.optimizer.zero_grad()
    inputs, targets = r.inputs[rows], r.targets[rows]
    mask = inputs != data.n_items
    h = r.model(inputs)[mask]
    plain = L.full_ce(r.sim.matrix(h, r.model.item_emb.weight[: data.n_items]), targets[mask])
    plain.backward()
    torch.testing.assert_close(blockwise, plain)
    assert grads.keys() == {n for n, p in r.model.named_parameters() if p.grad is not None}
    for n, p in r.model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_gbce_beta_reaches_the_loss(data):
    r = recipe(data, loss="gbce", num_negatives=4, gbce_t=0.75)
    alpha = 4 / (data.n_items - 1)
    assert r.loss_kwargs["beta"] == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))


def test_checkpoint_round_trip(data):
    r = recipe(data, similarity="adaptive")
    state = r.state_dict()
    r2 = recipe(data, similarity="adaptive")
    r2.load_state_dict(state)
    r.model.eval(), r2.model.eval()
    torch.testing.assert_close(r.score_users("valid", 0, 5), r2.score_users("valid", 0, 5))


def test_search_space_samples_are_all_valid():
    spec = specmod.load("search_spaces/sasrec.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    losses, sims = set(), set()
    for _ in range(300):
        trial = study.ask()
        cfg = ENTRY.make_config(sample(spec, trial))  # validate() raises on a bad combination
        losses.add(cfg.loss), sims.add(cfg.similarity)
    assert losses == set(LOSS_NAMES) and sims == set(SIMILARITIES)


@pytest.mark.ray  # trains in a benchmarks/sasrec_beauty.py subprocess
def test_benchmark_smoke_variant(tmp_path):
    """benchmarks/sasrec_beauty.py --smoke-test: the CI variant runs in seconds and writes results."""
    import json
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from helpers import run_script

    code, _, err = run_script([os.path.join(root, "benchmarks", "sasrec_beauty.py"), "--smoke-test",
                               "--threads", "1", "--output", str(tmp_path)], timeout=300)
    assert code == 0, err[-2000:]
    out = json.loads((tmp_path / "sasrec_beauty_smoke.json").read_text())
    assert set(out["runs"]) == {"ce", "bce_1neg"}
    for r in out["runs"].values():
        assert r["epochs_run"] == 2 and 0.0 <= r["test_ndcg_10"] <= r["test_hr_10"] <= 1.0
    assert (tmp_path / "sasrec_beauty_smoke.md").exists()


def test_evaluate_ranks_with_the_same_scores_as_score_users(data):
    """evaluate() computes every user's state once (sorted by length); same metrics as block scoring."""
    from trainables import metrics as M

    r = recipe(data, loss="ce")
    r.model.eval()
    want = M.evaluate(lambda a, b: r.score_users("valid", a, b), data.split("valid"), (5, 10), 7)
    assert r.evaluate("valid", (5, 10), 7) == pytest.approx(want)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_shared_negatives_mask_the_target_and_seen_items(data, exclude_seen):
    r = recipe(data, loss="sampled_softmax", num_negatives=30, shared_negatives=True, exclude_seen=exclude_seen)
    rows = torch.arange(20)
    inputs, targets = r.inputs[rows], r.targets[rows]
    mask = inputs != data.n_items
    h, t = r.model(inputs)[mask], targets[mask]  # [P, d], [P]
    users = rows[:, None].expand_as(mask)[mask] if exclude_seen else None
    logits = r.shared_negative_logits(h, t, users, torch.Generator().manual_seed(3))
    neg = r.sampler.sample(1, 30, torch.Generator().manual_seed(3))[0]  # the same single draw, [K]
    expect = r.sim.matrix(h, r.model.item_emb(neg))
    hit = neg[None, :] == t[:, None]
    if exclude_seen:
        seen = [set(data.train_items[data.train_indptr[u]:data.train_indptr[u + 1]].tolist()) for u in users.tolist()]
        hit |= torch.tensor([[int(i) in s for i in neg] for s in seen])
    assert hit.any() and not hit.all()  # 40 items, 30 drawn: some are every position's target or history
    assert torch.isneginf(logits[hit]).all() and torch.equal(logits[~hit], expect[~hit])


@pytest.mark.parametrize("loss", [n for n in LOSS_NAMES if RANKING_KIND[n] == "sampled"])
def test_every_sampled_loss_trains_with_shared_negatives(data, loss):
    r = recipe(data, loss=loss, num_negatives=8, shared_negatives=True)
    rows = torch.arange(30)
    before = fixed_batch_loss(r, rows)
    assert torch.isfinite(before)
    for _ in range(30):
        r.optimizer.zero_grad()
        loss_value = fixed_batch_loss(r, rows)
        loss_value.backward()
        assert all(torch.isfinite(p.grad).all() for p in r.model.parameters() if p.grad is not None)
        r.optimizer.step()
    assert fixed_batch_loss(r, rows) < before
