"""trainables.loop.fit without Ray: per-epoch reports, exact resume, non-finite losses."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from trainables.losses import RANKING_LOSSES, bpr
from trainables.synthetic import generate
from trainables import get_model
from trainables.loop import NonFiniteLoss, fit

ENTRY = get_model("bpr_mf")
CONFIG = {"dim": 16, "lr": 0.01, "batch_size": 128, "epochs": 4, "num_negatives": 2, "seed": 5}
TIMING = {"epoch_seconds", "eval_seconds", "peak_rss_mb"}  # machine-dependent: excluded from equality


@pytest.fixture(scope="module")
def data():
    return generate(n_users=150, n_items=80, mean_length=10.0, seed=2)


def roundtrip(state: dict) -> dict:
    """What the Ray trainable does with a state: torch.save now, torch.load(weights_only) later."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def run(data, config=CONFIG, state=None, keep_at=None):
    reports, kept = [], {}

    def report(metrics, get_state):
        reports.append({k: v for k, v in metrics.items() if k not in TIMING})
        if metrics["epoch"] == keep_at:
            kept.update(roundtrip(get_state()))

    fit(ENTRY, config, data, report, state=state, ks=(10, 20), batch_users=64)
    return reports, kept


def test_reports_once_per_epoch(data):
    calls = []
    fit(ENTRY, CONFIG, data, lambda m, g: calls.append((m, g)), ks=(10, 20), batch_users=64)
    assert [m["epoch"] for m, _ in calls] == [1, 2, 3, 4]
    expected = {"epoch", "train_loss", *ENTRY.metric_names((10, 20))} | TIMING
    assert {"val_hr_10", "val_ndcg_10", "val_mrr_20"} <= expected
    for m, get_state in calls:
        assert set(m) == expected
        assert 0 <= m["val_hr_10"] <= m["val_hr_20"] <= 1 and m["train_loss"] > 0
    state = calls[-1][1]()
    assert state["epoch"] == 4 and {"model", "optimizer", "rng"} <= set(state)


@pytest.mark.parametrize("k,optimizer", [(1, "adam"), (3, "adam"), (2, "sparse_adam")])
def test_resume_is_exact(data, k, optimizer):
    config = {**CONFIG, "optimizer": optimizer}
    full, _ = run(data, config)
    head, state = run(data, config, keep_at=k)
    assert head == full  # same seed, same run
    assert state["epoch"] == k
    tail, _ = run(data, config, state=state)
    assert [m["epoch"] for m in tail] == list(range(k + 1, CONFIG["epochs"] + 1))
    assert tail == full[k:]


def test_huge_lr_raises_non_finite_loss(data):
    with pytest.raises(NonFiniteLoss, match=r"^non-finite loss at epoch \d+, step \d+$"):
        run(data, {**CONFIG, "lr": 1e30})


def test_nan_loss_names_epoch_and_step(data, monkeypatch):
    calls = {"n": 0}

    def flaky(pos, neg):
        calls["n"] += 1
        loss = bpr(pos, neg)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setitem(RANKING_LOSSES, "bpr", dataclasses.replace(RANKING_LOSSES["bpr"], fn=flaky))
    reports = []
    with pytest.raises(NonFiniteLoss) as info:
        fit(ENTRY, CONFIG, data, lambda m, g: reports.append(m))
    assert str(info.value) == "non-finite loss at epoch 1, step 2"
    assert reports == []  # nothing was reported for the broken epoch
