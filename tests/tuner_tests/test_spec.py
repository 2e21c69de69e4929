"""tuner.spec: every bad spec is a one-line TunerError naming file, key and line; good specs load."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import optuna
import yaml

from helpers import assert_location, raises_tuner_error, write
from tuner import spec as S
from tuner.sampler import TunerTPESampler
from trainables.losses import accepted
from trainables import MODELS
from trainables.bpr_mf import Config as BPRConfig

ROOT = Path(__file__).resolve().parents[2]
M = "model: bpr_mf\n"
VALID_MODELS = "valid: " + ", ".join(MODELS)
VALID_LOSSES = "valid: " + ", ".join(accepted("bpr_mf"))  # what bpr_mf accepts
KNOBS = ", ".join(f.name for f in dataclasses.fields(BPRConfig))
LOSS = "space:\n  loss: {type: categorical, choices: [bpr, ce]}\n"

# (yaml text, line the message must name (None: no line), key it must name (None: none), fragment)
BAD = {
    "malformed yaml": (M + "space: {lr: [1, 2\n", 3, None, "invalid YAML"),
    "not a mapping": ("- model\n", None, None, "expected a mapping"),
    "unknown top-level key": (M + "modle: x\n", 2, "modle", "unknown key"),
    **{
        f"unknown key in {sec}": (M + body, 2, f"{sec}.bogus", "unknown key; valid keys:")
        for sec, body in {
            "metric": "metric: {name: val_ndcg_10, bogus: 1}\n",
            "data": "data: {source: synthetic, bogus: 1}\n",
            "data.synthetic": "data: {synthetic: {n_users: 50, bogus: 1}}\n",
            "eval": "eval: {bogus: 1}\n",
            "search": "search: {bogus: 1}\n",
            "scheduler": "scheduler: {bogus: 1}\n",
            "resources": "resources: {bogus: 1}\n",
            "tracking": "tracking: {bogus: 1}\n",
            "run": "run: {bogus: 1}\n",
        }.items()
    },
    "unknown key in a space entry": (M + "space:\n  lr: {type: float, low: 0.1, high: 1, bogus: 1}\n",
                                     3, "space.lr.bogus", "unknown key"),
    "space entry without type": (M + "space:\n  lr: {low: 0.1, high: 1}\n", 3, "space.lr.type", "missing"),
    "unknown model": ("model: no_such_model\n", 1, "model", VALID_MODELS),
    "model not a string": ("model: [bpr_mf]\n", 1, "model", VALID_MODELS),
    "missing model": ("name: x\n", None, "model", "missing"),
    "unknown knob in fixed": (M + "fixed: {dropout: 0.1}\n", 2, "fixed.dropout", "valid keys: " + KNOBS),
    "unknown knob in space": (M + "space:\n  dropout: {type: float, low: 0, high: 1}\n", 3, "space.dropout",
                              "valid: " + KNOBS),
    "knob fixed and searched": (M + "fixed: {lr: 0.1}\nspace:\n  lr: {type: float, low: 0.1, high: 1}\n",
                                4, "space.lr", "either fixed or searched"),
    "string for int": (M + "fixed: {dim: many}\n", 2, "fixed.dim", "expected an integer"),
    "bool for int": (M + "fixed: {dim: true}\n", 2, "fixed.dim", "expected an integer"),
    "float for int": (M + "fixed: {dim: 1.5}\n", 2, "fixed.dim", "expected an integer"),
    "list for float": (M + "fixed: {lr: [0.1]}\n", 2, "fixed.lr", "expected a number"),
    "string for int in a section": (M + "search: {samples: lots}\n", 2, "search.samples", "expected an integer"),
    "list for a bound": (M + "space:\n  lr: {type: float, low: [1], high: 2}\n", 3, "space.lr.low",
                         "expected a number"),
    "bad literal": (M + "metric: {mode: maximize}\n", 2, "metric.mode", "not one of max, min"),
    "low > high": (M + "space:\n  lr:\n    type: float\n    low: 0.5\n    high: 0.1\n", 5, "space.lr.low",
                   "low > high"),
    "log with low <= 0": (M + "space:\n  weight_decay: {type: float, low: 0, high: 1, log: true}\n",
                          3, "space.weight_decay.low", "log scale needs low > 0"),
    "log with step": (M + "space:\n  lr: {type: float, low: 0.1, high: 1, log: true, step: 0.1}\n",
                      3, "space.lr.step", "step cannot be combined with log"),
    "empty choices": (M + "space:\n  loss: {type: categorical, choices: []}\n", 3, "space.loss.choices",
                      "non-empty"),
    "categorical with low/high": (M + "space:\n  dim: {type: categorical, choices: [8], low: 1, high: 2}\n",
                                  3, "space.dim.low", "not allowed with type categorical"),
    "categorical with log": (M + "space:\n  dim: {type: categorical, choices: [8, 16], log: true}\n",
                             3, "space.dim.log", "not allowed with type categorical"),
    "int knob with float bounds": (M + "space:\n  dim: {type: int, low: 0.5, high: 4}\n", 3, "space.dim.low",
                                   "integer low and high"),
    "int knob with float step": (M + "space:\n  dim: {type: int, low: 1, high: 8, step: 0.5}\n", 3,
                                 "space.dim.step", "integer step"),
    "float type for int knob": (M + "space:\n  dim: {type: float, low: 1, high: 8}\n", 3, "space.dim.type",
                                "use type: int"),
    "numeric type for a string knob": (M + "space:\n  loss: {type: float, low: 1, high: 8}\n", 3,
                                       "space.loss.type", "not numeric"),
    "bound outside the knob's range": (M + "space:\n  dim: {type: int, low: 0, high: 8}\n", 3, "space.dim.low",
                                       "must be >= 1"),
    "unknown loss in choices": (M + "space:\n  loss:\n    type: categorical\n    choices: [bpr, hinge]\n",
                                5, "space.loss.choices[1]", VALID_LOSSES),
    "unknown loss in fixed": (M + "fixed: {loss: hinge}\n", 2, "fixed.loss", VALID_LOSSES),
    "when: unknown knob": (M + "space:\n  dim: {type: int, low: 1, high: 8, when: {colour: red}}\n", 3,
                           "space.dim.when.colour", "not a categorical knob listed before"),
    "when: later knob": (M + "space:\n  num_negatives: {type: int, low: 1, high: 8, when: {loss: bpr}}\n"
                         "  loss: {type: categorical, choices: [bpr, ce]}\n", 3, "space.num_negatives.when.loss",
                         "listed before num_negatives"),
    "when: non-categorical knob": (M + "space:\n  dim: {type: int, low: 1, high: 8}\n"
                                   "  num_negatives: {type: int, low: 1, high: 8, when: {dim: 4}}\n", 4,
                                   "space.num_negatives.when.dim", "can only depend on a categorical knob"),
    "when: value never sampled": (M + LOSS + "  num_negatives: {type: int, low: 1, high: 8, when: {loss: bce}}\n",
                                  4, "space.num_negatives.when.loss", "'bce' is never sampled"),
    "when: fixed value never holds": (M + "fixed: {loss: ce}\nspace:\n"
                                      "  num_negatives: {type: int, low: 1, high: 8, when: {loss: bpr}}\n",
                                      4, "space.num_negatives.when.loss", "never"),
    "metric not reported": (M + "metric: {name: val_auc}\n", 2, "metric.name", "valid: val_hr_10"),
    "metric at a cut-off not evaluated": (M + "metric: {name: val_ndcg_5}\n", 2, "metric.name", "unknown metric"),
    "non-positive cut-off": (M + "eval: {ks: [0, 10]}\n", 2, "eval.ks", "positive"),
    "no cut-offs": (M + "eval: {ks: []}\n", 2, "eval.ks", "positive"),
    "file source without path": (M + "data: {source: file}\n", 2, "data.path", "needs a path"),
    "path without file source": (M + "data: {path: x.txt}\n", 2, "data.path", "data.source: file"),
    "negative cpu": (M + "resources: {cpu: -1}\n", 2, "resources.cpu", "must be >= 0"),
    "negative gpu": (M + "resources: {gpu: -0.5}\n", 2, "resources.gpu", "must be >= 0"),
    "grace_period > max epochs": (M + "fixed: {epochs: 3}\nscheduler: {grace_period: 5}\n", 3,
                                  "scheduler.grace_period", "exceeds the most epochs a trial runs (3)"),
    "grace_period > searched epochs": (M + "space:\n  epochs: {type: int, low: 1, high: 4}\n"
                                       "scheduler: {grace_period: 5}\n", 4, "scheduler.grace_period", "(4)"),
    "asha_promote without a space": (M + "scheduler: {type: asha_promote}\n", 2, "scheduler.type", "no `space`"),
    "unknown scheduler": (M + "scheduler: {type: hyperband}\n", 2, "scheduler.type", "asha_promote"),
    "brackets beyond the rungs": (M + "fixed: {epochs: 20}\nscheduler: {grace_period: 1, reduction_factor: 4, "
                                  "brackets: 4}\n", 3, "scheduler.brackets",
                                  "this schedule has 3 (asha, rungs at epochs 1, 4, 16)"),
    "brackets under fifo": (M + "scheduler: {type: fifo, brackets: 2}\n", 2, "scheduler.brackets", "has 0"),
    "zero brackets": (M + "scheduler: {brackets: 0}\n", 2, "scheduler.brackets", ">= 1"),
}


@pytest.mark.parametrize("text,line,key,fragment", list(BAD.values()), ids=list(BAD))
def test_bad_spec(tmp_path, text, line, key, fragment):
    path = write(tmp_path, "bad.yaml", text)
    msg = raises_tuner_error(S.load, path)
    assert_location(msg, path, line, key)
    assert fragment in msg


def test_missing_data_file(tmp_path):
    path = write(tmp_path, "s.yaml", M + "data:\n  source: file\n  path: nowhere/data.txt\n")
    msg = raises_tuner_error(S.load, path)
    assert_location(msg, path, 4, "data.path")
    assert os.path.join(str(tmp_path), "nowhere", "data.txt") in msg  # resolved against the spec's folder


def test_missing_item_attributes_file(tmp_path):
    write(tmp_path, "d.txt", "1 a b c\n")
    path = write(tmp_path, "s.yaml", M + "data: {source: file, path: d.txt, item_attributes: attrs.json}\n")
    assert_location(raises_tuner_error(S.load, path), path, 2, "data.item_attributes")


def test_missing_spec_file(tmp_path):
    path = str(tmp_path / "none.yaml")
    assert_location(raises_tuner_error(S.load, path), path)


def test_bpr_yaml_loads():
    spec = S.load(str(ROOT / "search_spaces" / "bpr.yaml"))
    assert spec.model == "bpr_mf" and spec.name == "bpr"
    by_name = {p.name: p for p in spec.space}
    assert list(by_name) == ["loss", "num_negatives", "dim", "lr", "weight_decay", "batch_size"]
    assert by_name["num_negatives"].when == (("loss", ("bpr",)),)
    assert by_name["lr"].log and by_name["lr"].low == pytest.approx(1e-4)
    assert by_name["dim"].choices == (16, 32, 64, 128)
    assert spec.fixed == {"epochs": 20} and spec.max_epochs() == 20
    assert spec.metric.name == "val_ndcg_10" and spec.eval.ks == (10, 20)


def test_exponent_without_dot_is_a_float(tmp_path):
    path = write(tmp_path, "s.yaml", M + "fixed: {weight_decay: 1e-5}\n"
                 "space:\n  lr: {type: float, low: 1e-4, high: 1e-1, log: true}\n")
    spec = S.load(path)
    assert spec.fixed["weight_decay"] == 1e-5 and isinstance(spec.fixed["weight_decay"], float)
    assert (spec.space[0].low, spec.space[0].high) == (1e-4, 1e-1)


def test_when_values_are_cast_like_the_knob(tmp_path):
    path = write(tmp_path, "s.yaml", M + "space:\n  lr: {type: categorical, choices: [1e-3, 1e-2]}\n"
                 "  dim: {type: int, low: 1, high: 8, when: {lr: 1e-3}}\n")
    assert S.load(path).space[1].when == (("lr", (0.001,)),)


def test_overrides(tmp_path):
    path = str(ROOT / "search_spaces" / "bpr.yaml")
    spec = S.load(path, {"search.samples": 3, "scheduler.grace_period": "1", "run.max_failures": 2})
    assert spec.search.samples == 3 and spec.search.concurrency == 2  # siblings kept
    assert spec.scheduler.grace_period == 1 and spec.run.max_failures == 2
    msg = raises_tuner_error(S.load, path, {"search.sample": 3})
    assert_location(msg, path, None, "search.sample")


def test_smoke():
    spec = S.smoke(S.load(str(ROOT / "search_spaces" / "bpr.yaml")))
    assert spec.name == "bpr-smoke"
    assert spec.search.samples == 2 and spec.fixed["epochs"] == 2 and spec.max_epochs() == 2
    assert "epochs" not in {p.name for p in spec.space}
    assert spec.data.source == "synthetic" and spec.data.synthetic.n_users <= 500
    assert spec.scheduler.grace_period <= spec.max_epochs()


def test_dump_fixed_round_trip(tmp_path):
    spec = S.load(str(ROOT / "search_spaces" / "bpr.yaml"))
    config = {"epochs": 20, "loss": "ce", "dim": 32, "lr": 0.00123, "weight_decay": 1e-6, "batch_size": 512}
    text = S.dump_fixed(spec, config)
    path = write(tmp_path, "best_config.yaml", text)
    best = S.load(path)
    assert best.space == () and dict(best.fixed) == config
    assert best.model == spec.model and best.name == "bpr-best"
    assert best.data == spec.data and best.eval == spec.eval and best.metric == spec.metric
    assert best.scheduler.type == "fifo" and best.search.samples == 1
    assert yaml.safe_load(text)["fixed"] == config


def test_dump_fixed_keeps_the_data_file(tmp_path):
    (tmp_path / "data").mkdir()
    write(tmp_path, "data/d.txt", "1 a b c\n")
    (tmp_path / "specs").mkdir()
    spec = S.load(write(tmp_path, "specs/s.yaml", M + "data: {source: file, path: ../data/d.txt, format: sequences}\n"))
    (tmp_path / "out").mkdir()
    best = S.load(write(tmp_path, "out/best.yaml", S.dump_fixed(spec, {"dim": 8})))
    assert best.data_path == spec.data_path == str(tmp_path / "data" / "d.txt")
    assert best.data.format == "sequences" and best.fixed == {"dim": 8}


def test_smoke_on_file_data_keeps_the_file_and_takes_a_seeded_slice_of_users(tmp_path, capsys):
    from trainables.datasets import dataset_for

    rows = [f"u{u} " + " ".join(f"i{(u * 7 + j) % 97}" for j in range(6)) for u in range(500)]
    (tmp_path / "seqs.txt").write_text("\n".join(rows) + "\n")
    body = {"name": "f", "model": "bpr_mf", "data": {"source": "file", "path": "seqs.txt", "format": "sequences"},
            "fixed": {"epochs": 3}, "search": {"samples": 4, "seed": 5}}
    path = write(tmp_path, "spec.yaml", yaml.safe_dump(body))
    full = dataset_for(S.load(path))
    spec = S.smoke(S.load(path))
    assert spec.data.source == "file" and spec.data_path == str(tmp_path / "seqs.txt")
    capsys.readouterr()
    data = dataset_for(spec)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"smoke test: 300 of 500 users of {tmp_path / 'seqs.txt'}"], err
    assert data.n_users == 300 and data.n_items == full.n_items and len(data.valid) == len(data.test) == 300
    again = dataset_for(spec)  # seeded: the same users every time
    assert (again.train_items == data.train_items).all() and (again.test == data.test).all()
    # each kept user's history is whole: some full user has exactly the same train items, valid and test
    full_rows = {(tuple(full.train_items[full.train_indptr[u]:full.train_indptr[u + 1]]), full.valid[u], full.test[u])
                 for u in range(full.n_users)}
    for u in range(data.n_users):
        row = (tuple(data.train_items[data.train_indptr[u]:data.train_indptr[u + 1]]), data.valid[u], data.test[u])
        assert row in full_rows


def test_paths_written_in_a_file_resolve_beside_it_in_one_place(tmp_path, monkeypatch):
    """yamlio.beside is what the spec check, the data loader, claims and manifests use: `~`, a
    relative path from the file's folder, normalised; an absolute path and None pass through."""
    from trainables import yamlio

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    anchor = str(tmp_path / "specs" / "s.yaml")
    assert yamlio.beside(anchor, "../data/d.txt") == str(tmp_path / "data" / "d.txt")
    assert yamlio.beside(anchor, "~/d.txt") == str(tmp_path / "home" / "d.txt")
    assert yamlio.beside(anchor, "/abs/./d.txt") == "/abs/d.txt"
    assert yamlio.beside(anchor, None) is None
    spec = S.Spec(path=anchor, name="s", model="bpr_mf",
                  data=S.DataSpec(source="file", path="../data/d.txt", item_attributes="~/a.json"))
    assert spec.data_path == yamlio.beside(anchor, "../data/d.txt")
    assert spec.resolve(spec.data.item_attributes) == str(tmp_path / "home" / "a.json")


def test_a_storage_password_never_reaches_the_error_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: bpr_mf\nsearch: {storage: 'postgresql://u:SECRET@127.0.0.1:99999/db'}\n")
    msg = raises_tuner_error(S.load, str(path))
    assert "search.storage" in msg and "SECRET" not in msg and "***@" in msg


def test_tpe_options_reach_optunas_sampler(tmp_path):
    from tuner import sweep

    body = {"name": "t", "model": "bpr_mf", "fixed": {"epochs": 2},
            "space": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}},
            "search": {"samples": 4, "n_startup_trials": 3, "multivariate": True, "group": True, "constant_liar": True}}
    spec = S.load(write(tmp_path, "spec.yaml", yaml.safe_dump(body)))
    searcher, _, _ = sweep._search(spec, str(tmp_path), "t")
    sampler = searcher._sampler
    assert (sampler._n_startup_trials, sampler._multivariate, sampler._group, sampler._constant_liar) == (3, True, True, True)
    plain = S.load(write(tmp_path, "plain.yaml", yaml.safe_dump({**body, "search": {"samples": 4}})))
    sampler = sweep._search(plain, str(tmp_path), "t")[0]._sampler
    assert (sampler._n_startup_trials, sampler._multivariate, sampler._group) == (10, False, False)  # Optuna's defaults
    assert type(sampler) is optuna.samplers.TPESampler
    paused = S.load(write(tmp_path, "paused.yaml", yaml.safe_dump({**body, "search": {"paused_as_pruned": True}})))
    sampler = sweep._search(paused, str(tmp_path), "t")[0]._sampler
    assert isinstance(sampler, TunerTPESampler) and (sampler._paused_as_pruned, sampler._random_fraction) == (True, 0.0)
    mixed = S.load(write(tmp_path, "mixed.yaml", yaml.safe_dump({**body, "search": {"random_fraction": 0.25}})))
    sampler = sweep._search(mixed, str(tmp_path), "t")[0]._sampler
    assert (sampler._paused_as_pruned, sampler._largest_rung, sampler._random_fraction) == (False, False, 0.25)
    rung = S.load(write(tmp_path, "rung.yaml", yaml.safe_dump({**body, "search": {"largest_rung": True}})))
    sampler = sweep._search(rung, str(tmp_path), "t")[0]._sampler
    assert isinstance(sampler, TunerTPESampler) and (sampler._largest_rung, sampler._paused_as_pruned) == (True, False)
    wide = S.load(write(tmp_path, "wide.yaml", yaml.safe_dump({**body, "search": {"gamma": "bohb"}})))
    sampler = sweep._search(wide, str(tmp_path), "t")[0]._sampler
    assert type(sampler) is optuna.samplers.TPESampler
    assert (sampler._gamma(5), sampler._gamma(20)) == (2, 3)  # d = 1 knob: max(d + 1, 15% of n)
    assert sampler._gamma(60) == 9 and sweep._search(plain, str(tmp_path), "t")[0]._sampler._gamma is None  # Optuna's
    odd = write(tmp_path, "odd.yaml", yaml.safe_dump({**body, "search": {"gamma": "hyperopt"}}))
    assert "search.gamma" in raises_tuner_error(S.load, odd)
    for knob, value in (("paused_as_pruned", True), ("largest_rung", True), ("random_fraction", 0.5), ("gamma", "bohb")):
        rand = write(tmp_path, "rand.yaml", yaml.safe_dump({**body, "search": {"algo": "random", knob: value}}))
        assert f"search.{knob}" in raises_tuner_error(S.load, rand)
    over = write(tmp_path, "over.yaml", yaml.safe_dump({**body, "search": {"random_fraction": 1.5}}))
    assert "search.random_fraction" in raises_tuner_error(S.load, over)


def test_brackets_reach_both_asha_schedulers(tmp_path):
    """scheduler.brackets builds Ray's AsyncHyperBand with that many brackets, and asha_promote with one
    `Rungs` per bracket, bracket s from rung s on."""
    from tuner import sweep

    body = {"name": "b", "model": "bpr_mf", "fixed": {"epochs": 20},
            "space": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}},
            "search": {"samples": 8}, "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 4,
                                                    "brackets": 3}}
    spec = S.load(write(tmp_path, "a.yaml", yaml.safe_dump(body)))
    ray_asha = sweep._scheduler(spec)
    assert [len(b._rungs) for b in ray_asha._brackets] == [3, 2, 1]
    body["scheduler"].update(type="asha_promote", brackets=2)
    spec = S.load(write(tmp_path, "p.yaml", yaml.safe_dump(body)))
    ours = sweep._scheduler(spec)
    assert [r.milestones for r in ours.brackets] == [(1, 4), (4,)] and sum(r.samples for r in ours.brackets) == 8
    assert S.load(write(tmp_path, "d.yaml", yaml.safe_dump({**body, "scheduler": {}}))).scheduler.brackets == 1
