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
