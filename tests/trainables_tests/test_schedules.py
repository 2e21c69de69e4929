"""Phase schedule, warmup ramp and adaptive loss weights (trainables/schedules.py)."""

import math

import pytest
import torch

from trainables import multimodal
from trainables.schedules import LossWeighter, PhaseSchedule, ramp

SEED_002 = {"recon": (0.005, 0.01, 0.002), "causal": (0.0, 0.001, 0.0005), "diversity": (0.0005, 0.001, 0.0002)}


def test_seed_002_table_at_every_boundary():
    s = PhaseSchedule.from_lengths((10, 20), SEED_002, warmup_epochs=0)
    assert s.ends == (10, 30)
    for epoch, phase in ((1, 1), (10, 1), (11, 2), (30, 2), (31, 3), (50, 3)):
        assert s.phase(epoch) == phase, epoch
        assert s.alphas_at(epoch) == {k: v[phase - 1] for k, v in SEED_002.items()}


def test_config_defaults_are_the_seed_002_table():
    s = multimodal.schedule(multimodal.Config())
    assert s.ends == (10, 30) and s.warmup_epochs == 3
    assert dict(s.alphas) == SEED_002


def test_warmup_ramp():
    s = PhaseSchedule.from_lengths((10, 20), SEED_002, warmup_epochs=3)
    assert [s.ramp(e) for e in (1, 2, 3, 4, 20)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert s.alpha("recon", 1) == pytest.approx(0.005 / 3)
    assert s.alpha("recon", 2) == pytest.approx(0.005 * 2 / 3)
    assert s.alpha("recon", 3) == pytest.approx(0.005)
    assert s.alpha("causal", 1) == 0.0  # 0 stays 0: the term (and its module) stays off
    assert ramp(5, 0) == 1.0 and ramp(1, 1) == 1.0


def test_warmup_spans_a_phase_boundary():
    s = PhaseSchedule.from_lengths((1, 2), SEED_002, warmup_epochs=4)
    assert s.alpha("causal", 2) == pytest.approx(0.001 * 2 / 4)  # phase 2, ramp 1/2
    assert s.alpha("diversity", 4) == pytest.approx(0.0002)  # phase 3, ramp done


def test_empty_phase_is_skipped():
    s = PhaseSchedule.from_lengths((0, 5), SEED_002)
    assert [s.phase(e) for e in (1, 5, 6)] == [2, 2, 3]


def test_bad_schedules():
    with pytest.raises(ValueError, match="phases"):
        PhaseSchedule((10, 30), {"recon": (1.0, 2.0)})
    with pytest.raises(ValueError, match="non-decreasing"):
        PhaseSchedule((30, 10), {"recon": (1.0, 2.0, 3.0)})


BASE = {"contrastive": 0.2, "encoder": 0.05}


def _within(w: LossWeighter, r: float = 1.0) -> None:
    for k, v in w.weights(r).items():
        lo, hi = BASE[k] * w.min_factor * r, BASE[k] * w.max_factor * r
        assert lo * (1 - 1e-6) <= v <= hi * (1 + 1e-6), (k, v)


def test_fixed_weights_and_ramp():
    w = LossWeighter(BASE, "fixed")
    assert w.weights() == pytest.approx(BASE)
    assert w.weights(0.5) == pytest.approx({k: v / 2 for k, v in BASE.items()})
    got = w.combine({"contrastive": torch.tensor(2.0), "encoder": torch.tensor(4.0)}, torch.tensor(1.0), 0.5)
    assert got.item() == pytest.approx(0.5 * (0.2 * 2 + 0.05 * 4))


def test_magnitude_weights_normalise_and_stay_bounded():
    w = LossWeighter(BASE, "magnitude", momentum=0.5, min_factor=0.1, max_factor=10.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # wild magnitudes, 1e-6 .. 1e6
        losses = {k: 10 ** (12 * torch.rand((), generator=g) - 6) for k in BASE}
        w.combine(losses, 10 ** (12 * torch.rand((), generator=g) - 6))
        _within(w)
    w2 = LossWeighter(BASE, "magnitude", momentum=0.5)
    for _ in range(50):  # steady losses inside the bounds: w_k = base_k * L_ref / L_k
        w2.combine({"contrastive": torch.tensor(4.0), "encoder": torch.tensor(0.5)}, torch.tensor(1.0))
    assert w2.weights() == pytest.approx({"contrastive": 0.2 / 4, "encoder": 0.05 * 2})


def test_magnitude_weights_frozen_in_eval_mode():
    w = LossWeighter(BASE, "magnitude").eval()
    w.combine({"contrastive": torch.tensor(100.0), "encoder": torch.tensor(100.0)}, torch.tensor(1.0))
    assert w.weights() == pytest.approx(BASE)


def test_uncertainty_weights_stay_bounded():
    w = LossWeighter(BASE, "uncertainty", min_factor=0.1, max_factor=10.0)
    opt = torch.optim.SGD(w.parameters(), lr=100.0)
    for big in (1e6, 1e-6, 1e6):
        total = w.combine({"contrastive": torch.tensor(big), "encoder": torch.tensor(big)}, torch.tensor(1.0))
        opt.zero_grad()
        total.backward()
        opt.step()
        w.clamp_()
        _within(w)
        assert (w.log_var.abs() <= math.log(10.0) + 1e-6).all()
    w.log_var.data.fill_(-50.0)  # even unclamped parameters give bounded weights
    _within(w)


def test_uncertainty_optimum_is_inverse_loss():
    w = LossWeighter({"a": 1.0}, "uncertainty", min_factor=0.01, max_factor=100.0)
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    for _ in range(600):
        total = w.combine({"a": torch.tensor(4.0)}, torch.tensor(1.0))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert w.weights()["a"] == pytest.approx(0.25, rel=0.02)  # exp(-s) -> 1 / L


def test_bad_weighter():
    with pytest.raises(ValueError, match="weighting"):
        LossWeighter(BASE, "softmax")
    with pytest.raises(ValueError, match="min_factor"):
        LossWeighter(BASE, "magnitude", min_factor=2.0, max_factor=1.0)
