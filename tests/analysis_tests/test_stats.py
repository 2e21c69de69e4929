"""Paired seed comparison: the t quantile against tables, and the verdicts."""

import math

import pytest

from analysis.stats import NO_DIFFERENCE, compare, markdown_table, t_cdf, t_quantile


@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (4, 2.776), (5, 2.571), (9, 2.262), (29, 2.045),
                                   (1000, 1.962)])
def test_t_quantile_matches_tables(df, t):
    assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-3)


def test_t_quantile_other_levels_and_symmetry():
    assert t_quantile(0.995, 4) == pytest.approx(4.604, abs=1e-3)
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=1e-3)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=1e-3)
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_cdf(2.776445, 4) == pytest.approx(0.975, abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


SEEDS = [0, 1, 2, 3, 4]
A = {s: {"val_ndcg_10": 0.030 + 0.002 * math.sin(s), "val_hr_10": 0.060 + 0.003 * math.cos(s)} for s in SEEDS}
METRICS = ["val_ndcg_10", "val_hr_10"]


def test_identical_inputs_no_difference_zero_width_ci():
    rows = compare(A, A, METRICS)
    for r in rows:
        assert r.n == 5 and r.diff == 0 and r.ci_low == 0 == r.ci_high and r.rel_pct == 0
        assert r.verdict == NO_DIFFERENCE


def test_noise_only_difference_is_not_detected():
    b = {s: {m: v + (0.0005 if s % 2 else -0.0005) for m, v in A[s].items()} for s in SEEDS}
    r = compare(A, b, ["val_ndcg_10"])[0]
    assert r.ci_low < 0 < r.ci_high and r.verdict == NO_DIFFERENCE


def test_clearly_worse_b_and_mode_orientation():
    b = {s: {m: v * 0.8 + 0.0001 * s for m, v in A[s].items()} for s in SEEDS}
    rows = compare(A, b, METRICS)
    assert [r.verdict for r in rows] == ["worse", "worse"]
    assert rows[0].ci_high < 0 and rows[0].rel_pct == pytest.approx(-20, abs=2)
    # the same numbers for a lower-is-better metric: B is better
    assert compare(A, b, ["val_ndcg_10"], {"val_ndcg_10": "min"})[0].verdict == "better"
    assert compare(b, A, ["val_ndcg_10"])[0].verdict == "better"


def test_one_seed_has_no_ci():
    r = compare({0: A[0]}, {0: {"val_ndcg_10": 0.5}}, ["val_ndcg_10"])[0]
    assert r.n == 1 and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert "N too small" in r.verdict and r.diff == pytest.approx(0.5 - A[0]["val_ndcg_10"])


def test_pairs_only_common_finite_seeds():
    b = {s: dict(A[s]) for s in [1, 2, 3, 4]}
    b[9] = dict(A[0])  # seed 9 has no partner in A
    b[2]["val_ndcg_10"] = float("nan")  # an errored run drops that seed for that metric only
    rows = compare(A, b, METRICS)
    assert [r.n for r in rows] == [3, 4]


def test_markdown_table():
    b = {s: {m: v * 0.8 for m, v in A[s].items()} for s in SEEDS}
    text = markdown_table(compare(A, b, METRICS) + compare({0: A[0]}, {0: A[0]}, ["val_hr_10"]), "bpr", "ce")
    lines = text.splitlines()
    assert lines[0].startswith("| metric | N | mean bpr | mean ce | ce − bpr | 95% CI |")
    assert len(lines) == 5 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "worse" in lines[2] and "-20.0%" in lines[2] and "| – |" in lines[4]
