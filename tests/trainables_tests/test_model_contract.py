"""The contract every entry of trainables.MODELS keeps, checked on each (no Ray, tiny data).

Data come the way a sweep gets them: a spec file naming the model and a small embedded
generator, then `entry.dataset(spec)`. Each model trains through `trainables.loop.fit`, and
resumes the way a restarted Ray trial does: from a state.pt written by tuner/checkpoints.py and
read back with weights_only=True, by a fresh recipe.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from helpers import torch_threads, write
from trainables import MODELS
from trainables.errors import TunerError
from trainables.loop import RankingRecipe, Recipe, evaluate, fit
from trainables.train_config import TrainConfig
from tuner import checkpoints
from tuner import spec as specmod

KS = (5, 10)
TIMING = {"epoch_seconds", "eval_seconds", "peak_rss_mb"}  # machine-dependent: excluded from equality
# Small sizes for speed; a model missing here trains with its defaults but 2 epochs (slower, still checked).
TINY = {
    "bpr_mf": {"dim": 8, "batch_size": 64},
    "two_tower": {"embed_dim": 8, "out_dim": 8, "tower_hidden": 16, "batch_size": 64},
    "sasrec": {"hidden_units": 8, "maxlen": 8, "num_blocks": 1, "batch_size": 16},
    "multimodal": {"dim": 8, "max_len": 8, "batch_size": 64, "phase1_epochs": 1},  # epoch 2 in phase 2
    "fusion_classifier": {"dim": 8, "hidden": 16, "proj_dim": 4, "batch_size": 32},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):  # exact equality across runs needs the same reduction order
        yield


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """model name -> its data, loaded through the model's own hook from a tiny spec."""
    d = tmp_path_factory.mktemp("specs")
    out = {}
    for name, entry in MODELS.items():
        path = write(d, f"{name}.yaml", f"model: {name}\nmetric: {{name: {entry.metric_names(KS)[0]}}}\n"
                     f"eval: {{ks: {list(KS)}}}\n"
                     "data: {synthetic: {n_users: 200, n_items: 60, mean_length: 8, seed: 3}}\n")
        out[name] = entry.dataset(specmod.load(path))
    return out


def config(name: str) -> dict:
    return {**TINY.get(name, {}), "epochs": 2, "seed": 7}


def run(name, data, state=None, save_at=None, save_dir=None):
    """fit `name` for config(name); reports without timing, the recipe. With save_at, the state
    after that epoch goes to save_dir through tuner/checkpoints.py and the run stops there (a trial
    killed after its checkpoint)."""
    reports = []

    class Stop(Exception):
        pass

    def report(metrics, get_state):
        reports.append({k: v for k, v in metrics.items() if k not in TIMING})
        if metrics["epoch"] == save_at:
            checkpoints.save(get_state(), save_dir)
            raise Stop

    try:
        recipe = fit(MODELS[name], config(name), data, report, state=state, ks=KS, batch_users=32)
    except Stop:
        recipe = None
    return reports, recipe


def same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN (a ratio with nothing to divide is reported as NaN)."""
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((a[k], b[k]) for k in a))


@pytest.mark.parametrize("name", list(MODELS))
def test_config_extends_the_base_training_config(name):
    cls = MODELS[name].config_cls
    assert issubclass(cls, TrainConfig) and cls.__dataclass_params__.frozen
    cfg = MODELS[name].make_config({"epochs": 3, "seed": 11, "lr": 0.5, "grad_clip": 1.0})
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.grad_clip) == (3, 11, 0.5, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 4


@pytest.mark.parametrize("name", list(MODELS))
def test_resume_from_a_checkpoint_file_is_exact(name, datasets, tmp_path):
    data = datasets[name]
    straight, recipe = run(name, data)
    assert [r["epoch"] for r in straight] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in straight)
    head, _ = run(name, data, save_at=1, save_dir=str(tmp_path))
    assert len(head) == 1 and same(head[0], straight[0])
    state = checkpoints.load_dir(str(tmp_path))  # torch.load(weights_only=True), digest checked
    assert state["epoch"] == 1

    fresh = MODELS[name].recipe(MODELS[name].make_config(config(name)), data, torch.device("cpu"))
    fresh.load_state_dict(state)  # the checkpoint alone rebuilds the epoch-1 model
    val = evaluate(fresh, "valid", KS, 32)
    assert same({f"val_{k}": v for k, v in val.items()}, {k: v for k, v in straight[0].items() if k.startswith("val_")})

    tail, resumed = run(name, data, state=state)
    assert len(tail) == 1 and same(tail[0], straight[1])
    final, again = recipe.model.state_dict(), resumed.model.state_dict()
    assert final.keys() == again.keys()
    assert all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.parametrize("name", list(MODELS))
def test_reports_and_evaluate_give_the_entry_metric_names(name, datasets):
    entry, data = MODELS[name], datasets[name]
    reports, recipe = run(name, data)
    names = entry.metric_names(KS)
    assert names and set(names) <= set(reports[-1])
    test = evaluate(recipe, "test", KS, 32)
    assert {n.removeprefix("val_") for n in names if n.startswith("val_")} <= set(test)
    assert all(math.isfinite(v) for v in test.values())


@pytest.mark.parametrize("name", list(MODELS))
def test_ranking_models_score_every_user_and_the_others_do_not_pretend(name, datasets):
    entry, data = MODELS[name], datasets[name]
    recipe = entry.recipe(entry.make_config(config(name)), data, torch.device("cpu"))
    assert isinstance(recipe, Recipe)
    assert isinstance(recipe, RankingRecipe) == entry.ranking
    if not entry.ranking:
        assert not hasattr(recipe, "score_users")
        return
    recipe.train_epoch(1, torch.Generator().manual_seed(0))
    recipe.model.eval()
    for split in ("valid", "test"):
        scores = recipe.score_users(split, 0, data.n_users)
        assert scores.shape == (data.n_users, data.n_items)
        assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_steps_through_the_shared_optimize(name, datasets, monkeypatch):
    """grad_clip (a base knob) clips every model's steps: Recipe.optimize is the one step."""
    entry, data = MODELS[name], datasets[name]
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, c: calls.append(c) or real(params, c))
    for clip in (0.0, 0.5):
        calls.clear()
        recipe = entry.recipe(entry.make_config({**config(name), "grad_clip": clip}), data, torch.device("cpu"))
        steps = []
        monkeypatch.setattr(recipe, "update", lambda: steps.append(1) or type(recipe).update(recipe))
        recipe.train_epoch(1, torch.Generator().manual_seed(0))
        assert steps, "train_epoch stepped without Recipe.optimize"
        assert calls == ([0.5] * len(steps) if clip else [])


def test_bpr_mf_refuses_grad_clip_with_lazy_adam():
    with pytest.raises(TunerError, match="grad_clip: needs optimizer adam"):
        MODELS["bpr_mf"].make_config({"optimizer": "sparse_adam", "grad_clip": 1.0})
