"""benchmarks/sasrec_sweep.py's pure parts: the sweep-wall-time axis, what mattered, the interval. No Ray."""

import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import sasrec_sweep  # noqa: E402


def test_wall_axis_drops_the_idle_time_between_an_interrupt_and_its_resume():
    # epochs at 10, 20 s; interrupted; resumed an hour later: epochs at 3620, 3630 s
    walls = sasrec_sweep.active_walls(0.0, [10.0, 20.0, 3620.0, 3630.0], gap=600.0)
    assert walls == [10.0, 20.0, 620.0, 630.0]
    assert sasrec_sweep.active_walls(5.0, [10.0, 500.0], gap=600.0) == [5.0, 495.0]  # no silence over the gap


def test_what_mattered_is_the_best_per_choice():
    trials = [{"loss": "ce", "hidden_units": "64", "best_val_ndcg_10": 0.04},
              {"loss": "ce", "hidden_units": "128", "best_val_ndcg_10": 0.05},
              {"loss": "gbce", "hidden_units": "128", "best_val_ndcg_10": 0.03},
              {"loss": "gbce", "hidden_units": "", "best_val_ndcg_10": float("nan")}]
    m = sasrec_sweep.mattered(trials)
    assert m["loss"] == {"ce": 0.05, "gbce": 0.03} and m["hidden_units"] == {"64": 0.04, "128": 0.05}


def test_interval_is_the_student_t_95_percent_interval():
    xs = [0.050, 0.052, 0.054, 0.056, 0.058]
    mean, lo, hi = sasrec_sweep.interval(xs)
    sd = math.sqrt(sum((x - 0.054) ** 2 for x in xs) / 4)
    assert math.isclose(mean, 0.054) and math.isclose(hi - mean, mean - lo)
    assert math.isclose(hi - mean, 2.7764451 * sd / math.sqrt(5), rel_tol=1e-6)  # t(0.975, df 4)
    assert sasrec_sweep.interval([0.05]) == (0.05, 0.05, 0.05)


def test_the_report_gives_the_refit_columns_and_their_verdicts_beside_the_test_ones():
    runs = [{"seed": s, "best_epoch": 12, "best_val_ndcg_10": 0.064, "test_ndcg_10": 0.050 + s / 1000,
             "test_hr_10": 0.083, "seconds": 300.0, "refit_test_ndcg_10": 0.056 + s / 1000,
             "refit_test_hr_10": 0.096 + s / 1000, "refit_seconds": 150.0} for s in range(3)]
    keys = ["test_ndcg_10", "test_hr_10", "refit_test_ndcg_10", "refit_test_hr_10"]
    out = {"sweep": {"name": "s", "status": "completed", "trials": 1, "trial_epochs": 1, "wall_seconds": 60.0,
                     "best_val": 0.064, "test": {}, "best_config": {"loss": "ce"}},
           "machine": "2 cores", "command": "c", "curve": [], "mattered": {},
           "confirmation": {"cap": 40, "patience": 10, "refit": True, "runs": runs,
                            "interval": {k: sasrec_sweep.interval([r[k] for r in runs]) for k in keys}}}
    md = sasrec_sweep.markdown(out)
    assert "| refit test NDCG@10 | refit test HR@10 | refit s |" in md
    assert "| 1 | 12 | 0.0640 | 0.0510 | 0.0830 | 300 | 0.0570 | 0.0970 | 150 |" in md
    verdicts = {line.split(":")[0][2:]: line.endswith("**met**") for line in md.splitlines() if "(lower bound)" in line}
    # 0.050-0.052 and 0.083 miss 0.055 / 0.095; 0.056-0.058 [CI low 0.0535] misses; HR 0.096-0.098 [low 0.0935] too
    assert verdicts == {"test_ndcg_10": False, "test_hr_10": False, "refit_test_ndcg_10": False,
                        "refit_test_hr_10": False}
    runs_met = [{**r, "refit_test_ndcg_10": 0.0600, "refit_test_hr_10": 0.1000 + r["seed"] / 10000} for r in runs]
    out["confirmation"]["runs"] = runs_met
    out["confirmation"]["interval"] = {k: sasrec_sweep.interval([r[k] for r in runs_met]) for k in keys}
    met = [line for line in sasrec_sweep.markdown(out).splitlines() if line.startswith("- refit_")]
    assert len(met) == 2 and all(line.endswith("**met**") for line in met)
    assert "refit=True" in sasrec_sweep.markdown(out)  # the protocol note beside the anchors
