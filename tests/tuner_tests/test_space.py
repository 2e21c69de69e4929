"""tuner.space with a plain Optuna study: ranges, steps, choices, `when` conditions, fixed knobs."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import optuna
import pytest

from helpers import write
from tuner import space as SP
from tuner import spec as S
from trainables import get_model

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]

SPACE = """\
model: bpr_mf
fixed: {epochs: 3, seed: 7}
space:
  loss: {type: categorical, choices: [bpr, bce, ce]}
  num_negatives: {type: int, low: 2, high: 10, step: 2, when: {loss: [bpr, bce]}}
  dim: {type: int, low: 4, high: 64, log: true}
  lr: {type: float, low: 1e-4, high: 1e-1, log: true}
  weight_decay: {type: float, low: 0.0, high: 0.1, step: 0.025}
  batch_size: {type: categorical, choices: [128, 256]}
"""


def check(spec: S.Spec, config: dict) -> None:
    for k, v in spec.fixed.items():
        assert config[k] == v
    chosen = dict(spec.fixed)
    for p in spec.space:
        on = all(chosen.get(ref) in vals for ref, vals in p.when)
        assert (p.name in config) == on, (p.name, config)
        if not on:
            continue
        v = chosen[p.name] = config[p.name]
        if p.type == "categorical":
            assert v in p.choices
            continue
        assert p.low <= v <= p.high
        if p.type == "int":
            assert isinstance(v, int)
        if p.step:
            assert math.isclose((v - p.low) / p.step, round((v - p.low) / p.step), abs_tol=1e-9)
    assert set(config) == set(chosen)
    get_model(spec.model).make_config(config)  # a valid model config (raises otherwise)


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0, n_startup_trials=5)],
                         ids=["random", "tpe"])
def test_sampled_configs_respect_the_space(tmp_path, sampler):
    spec = S.load(write(tmp_path, "s.yaml", SPACE))
    configs = []

    def objective(trial):
        config = SP.sample(spec, trial)
        configs.append(config)
        return config["lr"]

    optuna.create_study(sampler=sampler).optimize(objective, n_trials=40)
    for c in configs:
        check(spec, c)
    losses = {c["loss"] for c in configs}
    assert losses == {"bpr", "bce", "ce"}  # both branches of the condition were exercised
    assert all(c["epochs"] == 3 and c["seed"] == 7 for c in configs)


def test_bpr_yaml_with_ask_tell():
    spec = S.load(str(ROOT / "search_spaces" / "bpr.yaml"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    seen_ce = seen_bpr = False
    for _ in range(30):
        trial = study.ask()
        config = SP.sample(spec, trial)
        check(spec, config)
        seen_ce |= config["loss"] == "ce"
        seen_bpr |= config["loss"] == "bpr"
        # inactive knobs are never suggested, so TPE never records them
        assert ("num_negatives" in trial.params) == (config["loss"] == "bpr")
        study.tell(trial, config["lr"])
    assert seen_ce and seen_bpr


def test_define_by_run_returns_only_constants_and_pickles():
    spec = S.load(str(ROOT / "search_spaces" / "bpr.yaml"))
    fn = SP.define_by_run(spec)
    trial = optuna.create_study().ask()
    assert fn(trial) == {"epochs": 20}  # Ray's OptunaSearch wants the constants back
    assert set(trial.params) >= {"loss", "dim", "lr", "weight_decay", "batch_size"}
    assert pickle.loads(pickle.dumps(fn))(optuna.create_study().ask()) == {"epochs": 20}


def test_condition_on_a_fixed_knob(tmp_path):
    spec = S.load(write(tmp_path, "s.yaml", "model: bpr_mf\nfixed: {loss: bce}\nspace:\n"
                        "  num_negatives: {type: int, low: 1, high: 3, when: {loss: [bpr, bce]}}\n"))
    config = SP.sample(spec, optuna.create_study().ask())
    assert config["loss"] == "bce" and 1 <= config["num_negatives"] <= 3


def test_active():
    p = S.Param("num_negatives", "int", low=1, high=8, when=(("loss", ("bpr", "bce")),))
    assert SP.active(p, {"loss": "bce"})
    assert not SP.active(p, {"loss": "ce"})
    assert not SP.active(p, {})
