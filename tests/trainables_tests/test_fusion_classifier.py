"""The seed-004 gated fusion classifier and its multi-view data (trainables/multiview.py)."""

import numpy as np
import pytest
import torch

from trainables import losses, multiview
from tuner import spec as specmod
from trainables.errors import TunerError
from trainables import MODELS
from trainables.loop import NonFiniteLoss, evaluate, fit

ENTRY = MODELS["fusion_classifier"]


@pytest.fixture(scope="module")
def data():
    return multiview.generate(n_samples=400, seed=0)


def run(data, epochs=1, **config):
    history = []
    recipe = fit(ENTRY, {"epochs": epochs, "dim": 16, "hidden": 32, "proj_dim": 8, "batch_size": 64, **config},
                 data, lambda m, s: history.append(m))
    return recipe, history


# -- data -----------------------------------------------------------------------------------------

def test_generator_is_seeded_imbalanced_and_split(data):
    again = multiview.generate(n_samples=400, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(data.features, again.features))
    assert np.array_equal(data.labels, again.labels)
    counts = np.bincount(data.labels)
    assert list(counts) == sorted(counts, reverse=True) and counts[0] > 4 * counts[-1]
    parts = [data.train_idx, data.valid_idx, data.test_idx]
    assert sum(len(p) for p in parts) == 400 and len(np.unique(np.concatenate(parts))) == 400
    for p in parts[1:]:  # stratified: every class in valid and test
        assert set(data.labels[p]) == set(range(data.n_classes))
    x0 = data.features[0][data.train_idx]
    assert np.allclose(x0.mean(0), 0, atol=1e-5) and np.allclose(x0.std(0), 1, atol=1e-3)
    sees = data.truth["view_sees_class"]
    assert (~sees).any(axis=0).all() and (~sees).any(axis=1).all()  # every class hidden somewhere
    assert data.truth["noise"][0] < data.truth["noise"][-1]


def test_classification_metrics_by_hand():
    m = multiview.classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 -> 0.8; class 2: fn 1 -> 0; class 3 absent
    assert m["f1_class0"] == pytest.approx(0.5) and m["f1_class1"] == pytest.approx(0.8)
    assert m["f1_class2"] == 0.0 and m["f1_class3"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3) and m["accuracy"] == pytest.approx(0.6)
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 4, 200)
    assert multiview.classification_metrics(y, p, 5)["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))


def _write_views(tmp_path, n=60, labels=None):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((n, 4)).astype(np.float32))
    np.savez(tmp_path / "b.npz", x=rng.standard_normal((n, 3)))
    y = labels if labels is not None else np.array(["cat", "dog", "eel"] * (n // 3))
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "m.yaml").write_text("views: {a: a.npy, b: b.npz}\nlabels: y.npy\n")
    return tmp_path / "m.yaml"


def test_loader_reads_a_manifest(tmp_path):
    import pandas as pd

    path = _write_views(tmp_path)
    pd.DataFrame(np.random.default_rng(1).standard_normal((60, 2)), columns=["p", "q"]).to_parquet(tmp_path / "c.parquet")
    (tmp_path / "m.yaml").write_text("views: {a: a.npy, b: b.npz, c: c.parquet}\nlabels: y.npy\n")
    d = multiview.load(str(path))
    assert d.views == ("a", "b", "c") and d.view_dims == (4, 3, 2) and d.classes == ("cat", "dog", "eel")
    assert d.n_classes == 3 and len(d.train_idx) + len(d.valid_idx) + len(d.test_idx) == 60
    np.save(tmp_path / "split.npy", np.array(["train"] * 40 + ["valid"] * 10 + ["test"] * 10))
    (tmp_path / "m.yaml").write_text("views: {a: a.npy, b: b.npz}\nlabels: y.npy\nsplit: split.npy\n")
    d = multiview.load(str(path))
    assert list(d.valid_idx) == list(range(40, 50))


@pytest.mark.parametrize("breakage, culprit", [
    (lambda p: np.save(p / "a.npy", np.zeros((59, 4))), "a.npy"),  # row count mismatch
    (lambda p: np.save(p / "a.npy", np.full((60, 4), np.nan)), "a.npy"),  # non-finite
    (lambda p: np.save(p / "a.npy", np.zeros((60, 2, 2))), "a.npy"),  # 3-D
    (lambda p: np.savez(p / "b.npz", u=np.zeros((60, 1)), v=np.zeros((60, 1))), "b.npz"),  # ambiguous npz
    (lambda p: (p / "b.npz").write_bytes(b"not a zip"), "b.npz"),  # corrupt
    (lambda p: np.save(p / "y.npy", np.zeros(60)), "y.npy"),  # one class
    (lambda p: (p / "a.npy").unlink(), "a.npy"),  # missing
    (lambda p: (p / "m.yaml").write_text("views: {a: a.npy}\nlabels: y.npy\n"), "m.yaml"),  # one view
    (lambda p: (p / "m.yaml").write_text("views: {a: a.csv, b: b.npz}\nlabels: y.npy\n"), "a.csv"),
    (lambda p: (p / "m.yaml").write_text("views: {a: a.npy, b: b.npz}\nlabel: y.npy\n"), "m.yaml"),
])
def test_malformed_files_name_the_file(tmp_path, breakage, culprit):
    path = _write_views(tmp_path)
    (tmp_path / "a.csv").write_text("1,2\n")
    breakage(tmp_path)
    with pytest.raises(TunerError) as e:
        multiview.load(str(path))
    assert culprit in str(e.value)


def test_load_data_hook_reads_the_spec(tmp_path):
    spec = specmod.parse({"model": "fusion_classifier", "metric": {"name": "val_macro_f1"},
                          "data": {"synthetic": {"n_users": 300, "seed": 1}}}, "s.yaml")
    d = ENTRY.dataset(spec)
    assert d.n_samples == 300 and "seed=1" in d.name
    path = _write_views(tmp_path)
    spec = specmod.parse({"model": "fusion_classifier", "metric": {"name": "val_macro_f1"},
                          "data": {"source": "file", "path": str(path)}}, str(tmp_path / "s.yaml"))
    assert ENTRY.dataset(spec).views == ("a", "b")
    with pytest.raises(TunerError, match="unknown metric"):
        specmod.parse({"model": "fusion_classifier", "metric": {"name": "val_ndcg_10"}}, "s.yaml")


# -- model ----------------------------------------------------------------------------------------

def test_trains_and_reports_classification_metrics(data):
    recipe, h = run(data, epochs=6, lr=3e-3)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["val_macro_f1"] > h[0]["val_macro_f1"]
    for k in ("loss_cls", "loss_contrastive", "loss_global_recon", "loss_inter_recon", "loss_gate_reg",
              "weight_contrastive", "weight_encoder", "grad_norm", "val_accuracy", "val_f1_class3", "val_loss"):
        assert all(np.isfinite(m[k]) for m in h), k
    test = evaluate(recipe, "test")  # what tuner.sweep computes for the best trial
    assert set(test) >= {"macro_f1", "accuracy", "f1_class0"} and 0 <= test["macro_f1"] <= 1


@pytest.mark.parametrize("config", [
    {"weighting": "magnitude", "weight_min": 0.5, "weight_max": 2.0},
    {"weighting": "uncertainty", "weight_min": 0.5, "weight_max": 2.0, "lr": 0.5},
    {"cls_loss": "focal", "class_weights": "balanced", "recon_loss": "smooth_l1", "warmup_epochs": 2},
    {"cls_loss": "bce", "class_weights": "sqrt"},
])
def test_variants_train_with_bounded_weights(data, config):
    _, h = run(data, epochs=2, **config)
    lo, hi = config.get("weight_min", 1.0), config.get("weight_max", 1.0)
    r = [min(1.0, e / config.get("warmup_epochs", 1)) if config.get("warmup_epochs") else 1.0 for e in (1, 2)]
    for m, ramp in zip(h, r):
        assert np.isfinite(m["train_loss"])
        for k, base in (("weight_contrastive", 0.2), ("weight_encoder", 0.05)):
            assert base * lo * ramp * (1 - 1e-6) <= m[k] <= base * hi * ramp * (1 + 1e-6), k


def test_zero_weight_freezes_its_modules(data):
    recipe, _ = run(data, contrastive_weight=0.0, encoder_weight=0.0)
    m = recipe.model
    for p in list(m.projections.parameters()) + list(m.decoders.parameters()):
        assert p.grad is None and not p.requires_grad
    assert all(p.grad is not None for p in m.encoders.parameters())


def test_nan_loss_ends_the_trial(data, monkeypatch):
    monkeypatch.setattr(losses, "view_info_nce", lambda a, b, temperature=0.1: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLoss) as e:
        run(data)
    assert str(e.value) == "non-finite loss at epoch 1, step 0"


def test_search_space_validates():
    spec = specmod.load("search_spaces/fusion_classifier.yaml")
    assert spec.metric.name == "val_macro_f1" and not spec.model_entry().ranking
    enc = next(p for p in spec.space if p.name == "encoder_weight")
    assert (enc.low, enc.high) == (0.01, 0.1)
