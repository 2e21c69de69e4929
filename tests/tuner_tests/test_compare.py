"""`tuner compare` on cases whose answer is known, and `tuner analyze` on a finished sweep."""

import json
import os

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuner.cli import main

pytestmark = pytest.mark.ray

BASE = {
    "name": "base", "model": "bpr_mf",
    "data": {"synthetic": {"n_users": 400, "n_items": 120, "mean_length": 12, "seed": 3}},
    "fixed": {"epochs": 4, "lr": 0.02, "batch_size": 256},
    "search": {"concurrency": 2},
}


def claim_file(tmp_path, a_set, b_set, seeds=3, **extra):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "claim.yaml"
    path.write_text(yaml.safe_dump({"claim": "test", "spec": "base.yaml", "seeds": seeds,
                                    "a": {"name": "A", "set": a_set}, "b": {"name": "B", "set": b_set},
                                    "metrics": ["test_ndcg_10", "test_hr_10"], **extra}))
    return str(path)


def run_compare(tmp_path, capsys, path):
    out = tmp_path / "out"
    assert main(["compare", path, "--output", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    (d,) = [p for p in out.iterdir() if p.name.startswith("compare-")]
    return json.load(open(d / "compare.json")), printed, out


def test_identical_configs_show_no_difference(ray_session, tmp_path, capsys):
    res, printed, out = run_compare(tmp_path, capsys, claim_file(tmp_path, {}, {}))
    for row in res["rows"]:
        assert row["n"] == 3 and row["diff"] == 0.0
        assert row["verdict"] == "no detectable difference at this N"
    assert "| test_ndcg_10 (max) | 3 |" in printed
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("compare").experiment_id],
                                   "tags.`tuner.role` = 'compare'")
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == 6 and parent.data.tags["verdict.test_ndcg_10"].startswith("no detectable")


def test_crippled_config_is_worse(ray_session, tmp_path, capsys):
    """B (lr 1e-6) has a flat validation curve: with patience 1 its runs stop at epoch 2 of 4, while A's
    (improving every epoch) run to the cap; test metrics still come from the best-validation checkpoint."""
    res, printed, out = run_compare(tmp_path, capsys, claim_file(tmp_path, {}, {"fixed.lr": 1.0e-6}, patience=1))
    for row in res["rows"]:
        assert row["verdict"] == "worse", row
        assert row["ci_high"] < 0
        assert 0 <= row["p_t"] < 0.05 and 0 < row["p_sign"] <= 1 and row["n_power"] >= 2
    assert res["patience"] == 1 and "p(Wilcoxon)=" in printed and "N for 80% power: " in printed
    assert "Early stopping: patience 1; epochs run per seed: A 4, 4, 4; B 2, 2, 2 (cap 4 / 4)." in printed
    for side, seeds in res["per_seed"].items():
        for v in seeds.values():
            assert v["epochs_run"] == (4 if side == "A" else 2), (side, v)
            # the checkpoint tested is the best-validation one (B's ties: epoch 1 or the equal epoch 2)
            assert (v["test_epoch"] == v["best_epoch"]) if side == "A" else (v["test_epoch"] in (1, 2))
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("compare").experiment_id],
                                   "tags.`tuner.role` = 'compare'")
    assert parent.data.params["patience"] == "1" and "p_t_test_ndcg_10" in parent.data.metrics
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(k.data.tags.get("status") for k in kids) == ["completed"] * 3 + ["stopped_early"] * 3


def test_analyze_a_finished_sweep(ray_session, tmp_path, capsys):
    spec = {**BASE, "name": "an", "fixed": {"epochs": 4},
            "space": {"loss": {"type": "categorical", "choices": ["bpr", "ce"]},
                      "lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-2, "log": True}},
            "search": {"samples": 5, "concurrency": 2, "seed": 1},
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}
    (tmp_path / "an.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "an.yaml"), "--output", str(out), "--quiet"]) == 0
    capsys.readouterr()
    (sweep_dir,) = [p for p in out.iterdir() if p.name.startswith("an-")]
    assert (sweep_dir / "report" / "report.html").exists()  # written by the sweep itself

    assert main(["analyze", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    a = sweep_dir / "analysis"
    import pandas as pd

    table = pd.read_csv(a / "trials.csv")
    assert len(table) == 5 and set(table["trial"]) == {0, 1, 2, 3, 4}  # Optuna's trial numbers
    html = (a / "report.html").read_text()
    for n in range(5):
        assert f"trial-{n:03d}" in html
    assert "data:image/png;base64," in html
    for png in ("curves.png", "knobs.png", "parallel.png"):
        assert (a / png).stat().st_size > 1000
    assert "best trial on test" in printed
    meta = json.load(open(sweep_dir / "sweep.json"))
    client = MlflowClient(meta["tracking_uri"])
    names = {f.path for f in client.list_artifacts(meta["parent_run_id"], "analysis")}
    assert "analysis/report.html" in names and "analysis/trials.csv" in names


def test_analyze_unknown_run_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs")
    code = main(["analyze", "0123456789abcdef", "--tracking-uri", f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and "0123456789abcdef" in err and len(err.strip().splitlines()) == 1


def test_base_spec_with_b_overrides(ray_session, tmp_path, capsys):
    """`tuner compare BASE.yaml --b key=value`: B = BASE with overrides (here the same lr: no difference)."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "base.yaml"), "--b", "fixed.lr=0.02", "--seeds", "2",
                 "--output", str(out), "--quiet"]) == 0
    (d,) = [p for p in out.iterdir() if p.name.startswith("compare-")]
    res = json.load(open(d / "compare.json"))
    assert res["b"] == "fixed.lr=0.02" and res["seeds"] == 2
    assert [r["metric"] for r in res["rows"]] == ["test_ndcg_10", "test_hr_10"]
    assert all(r["diff"] == 0.0 for r in res["rows"])
