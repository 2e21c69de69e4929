"""write_report on a hand-made sweep: files exist, are real PNGs, and the HTML stands alone."""

import base64
import re

import numpy as np
import pandas as pd
import pytest

from tuner.importance import Importances
from analysis.report import trial_name, write_report

M = "val_ndcg_10"
PNG = b"\x89PNG\r\n\x1a\n"


def sweep(n=8, max_epochs=6):
    """A trials table shaped like analysis/trials.py's, with conditional and log-scale knobs."""
    rng = np.random.default_rng(0)
    rows, hists = [], {}
    for i in range(1, n + 1):
        lr = float(10 ** rng.uniform(-4, -1))
        loss = ["bpr", "ce"][i % 2]
        status = "errored" if i == n else ("stopped_early" if i % 3 == 0 else "completed")
        epochs = 0 if status == "errored" else (2 if status == "stopped_early" else max_epochs)
        curve = [0.01 + 0.02 * (1 - np.exp(-e / 2)) * (1 + np.log10(lr) / 8) for e in range(1, epochs + 1)]
        if epochs:
            hists[i] = pd.DataFrame({"epoch": range(1, epochs + 1), M: curve, "train_loss": np.linspace(1, 0.5, epochs)})
        rows.append({"trial": i, "trial_id": f"abc_{i:05d}", "status": status, "epochs_run": epochs,
                     f"best_{M}": max(curve) if curve else float("nan"), f"last_{M}": curve[-1] if curve else float("nan"),
                     "error": "NonFiniteLoss: non-finite loss at epoch 1" if status == "errored" else "",
                     "loss": loss, "n_negatives": int(rng.integers(1, 8)) if loss == "bpr" else None, "lr": lr})
    table = pd.DataFrame(rows).sort_values(f"best_{M}", ascending=False, na_position="last").reset_index(drop=True)
    return table, hists


def is_png(path, min_bytes=1024):
    data = open(path, "rb").read()
    return data.startswith(PNG) and len(data) > min_bytes


def test_report_files_and_self_contained_html(tmp_path):
    table, hists = sweep()
    imp = Importances({"lr": 0.7, "loss": 0.2, "n_negatives": 0.1}, reason="fanova on 5 complete trials",
                      method="fanova", n_trials=5)
    paths = write_report(str(tmp_path / "rep"), table, hists, M, "max", ("loss", "n_negatives", "lr"), imp, "bpr sweep")
    assert set(paths) == {"curves", "knobs", "parallel", "importance", "html"}
    for name in ("curves", "knobs", "parallel", "importance"):
        assert is_png(paths[name]), name
    page = open(paths["html"], encoding="utf-8").read()
    for n, tid in zip(table["trial"], table["trial_id"]):
        assert trial_name(n) in page and tid in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(b).startswith(PNG) for b in images)
    assert "http" not in page and "<script" not in page and "<link" not in page  # no external resources
    assert "bpr sweep" in page and "fanova on 5 complete trials" in page and "non-finite loss" in page


def test_log_axis_only_for_wide_ranges(tmp_path):
    from analysis.report import _log_scale

    assert _log_scale(pd.Series([1e-4, 3e-3, 5e-2]))
    assert not _log_scale(pd.Series([0.1, 0.5, 0.9]))
    assert not _log_scale(pd.Series([0.0, 1.0, 1000.0]))  # zero: no log axis
    assert not _log_scale(pd.Series(["bpr", "ce"]))


def test_report_without_search_or_importance(tmp_path):
    """A fixed-config run: no knobs, no importance; still curves and a page naming the trials."""
    table, hists = sweep(n=3)
    table = table.drop(columns=["loss", "n_negatives", "lr"])
    empty = Importances(reason="no Optuna study (a fixed-config run searches nothing)")
    paths = write_report(str(tmp_path), table, hists, M, "max", (), empty, "fixed")
    assert set(paths) == {"curves", "html"} and is_png(paths["curves"])
    page = open(paths["html"], encoding="utf-8").read()
    assert all(trial_name(n) in page for n in table["trial"]) and "no Optuna study" in page


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_trial_follows_mode(tmp_path, mode):
    table, hists = sweep(n=5)
    page = open(write_report(str(tmp_path), table, hists, M, mode, ("lr",), None, "t")["html"]).read()
    scored = table.dropna(subset=[f"best_{M}"])
    best = scored.loc[scored[f"best_{M}"].idxmax() if mode == "max" else scored[f"best_{M}"].idxmin(), "trial"]
    assert f"Best: <b>{trial_name(best)}</b>" in page
