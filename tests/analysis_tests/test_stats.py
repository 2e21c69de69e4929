"""Paired seed comparison: the t quantile against tables, the verdicts, the paired tests and the power N."""

import math

import pytest

from scipy import stats as sst

from analysis.stats import (NO_DIFFERENCE, POWER_CAP, compare, compare_one, markdown_table, seeds_for_power,
                            sign_p, t_cdf, t_power, t_quantile, significance_text, verdict_lines, wilcoxon_p)


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
    assert lines[0].endswith("| p(t) | p(Wilcoxon) | p(sign) | N for 80% power |")
    assert len(lines) == 5 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "worse" in lines[2] and "-20.0%" in lines[2] and "| – |" in lines[4]
    assert "| 0.062 | 0.062 |" in lines[2]  # 5 of 5 seeds lower: Wilcoxon and sign test both 1/16


# -- paired tests beside the interval -----------------------------------------------------------
D = [0.012, 0.004, -0.003, 0.009, 0.015, 0.001, 0.007]  # B - A per seed: mostly positive, one negative


def rows_of(d):
    return compare_one([0.0] * len(d), list(d), "m")


def test_p_values_match_scipy():
    r = rows_of(D)
    assert r.p_t == pytest.approx(sst.ttest_rel(D, [0.0] * len(D)).pvalue, rel=1e-9)
    assert r.p_t == pytest.approx(sst.ttest_1samp(D, 0.0).pvalue, rel=1e-9)
    assert r.p_wilcoxon == pytest.approx(sst.wilcoxon(D).pvalue, rel=1e-9)
    assert r.p_sign == pytest.approx(sst.binomtest(6, 7, 0.5).pvalue, rel=1e-9)
    assert r.p_sign == pytest.approx(16 / 128)  # P(<=1 or >=6 of 7) = 2 * (1 + 7) / 2^7
    # the verdict still comes from the 95% interval alone
    assert (r.verdict == "better") == (r.ci_low > 0)


def test_sign_and_wilcoxon_hand_computed():
    assert sign_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.0625)  # 5 of 5 positive: 2 / 2^5
    assert sign_p([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.0625)  # the zero is dropped
    assert sign_p([1.0, -1.0]) == pytest.approx(1.0)
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.0625)  # exact: 2 / 2^5 for all ranks positive
    assert wilcoxon_p([-1.0, -2.0, -3.0, -4.0, -5.0]) == pytest.approx(0.0625)


def test_power_n_for_d_of_one_is_ten():
    """A paired t-test with d_z = 1.0 needs 10 pairs for 80% power at alpha .05 two-sided (Cohen's tables)."""
    assert t_power(9, 1.0) < 0.8 <= t_power(10, 1.0)
    assert t_power(10, 1.0) == pytest.approx(0.8031, abs=1e-3)
    d = [1.0 + x for x in (-1.0, 0.0, 1.0)]  # mean 1, SD 1: d_z = 1
    assert seeds_for_power(d) == 10
    assert seeds_for_power([-x for x in d]) == 10  # the sign of the effect does not matter
    # a larger effect needs fewer seeds; a tiny one more than the cap
    assert seeds_for_power([2.0, 3.0, 4.0]) < 10
    assert seeds_for_power([-1.0, 1.001, 0.0]) == math.inf and str(POWER_CAP) in significance_text(rows_of([-1, 1.001, 0]))


def test_edge_cases_n1_all_equal_zero_sd():
    one = rows_of([0.5])
    assert [one.p_t, one.p_wilcoxon, one.p_sign, one.n_power] == pytest.approx([math.nan] * 4, nan_ok=True)
    zeros = rows_of([0.0, 0.0, 0.0])
    assert math.isnan(zeros.p_t) and math.isnan(zeros.p_wilcoxon) and math.isnan(zeros.p_sign)
    assert math.isnan(zeros.n_power)
    same = rows_of([0.2, 0.2, 0.2, 0.2])  # zero SD, non-zero mean: t-test p = 0, no power N
    assert same.p_t == 0.0 and math.isnan(same.n_power)
    assert same.p_sign == pytest.approx(0.125) and same.p_wilcoxon == pytest.approx(sst.wilcoxon([0.2] * 4).pvalue)
    assert significance_text(one) == "p(t)=– p(Wilcoxon)=– p(sign)=–, N for 80% power: –"


def test_verdict_lines():
    text = verdict_lines([rows_of([1.0, 2.0, 3.0, 4.0, 5.0])])
    assert text.startswith("- m: better; p(t)=") and "p(Wilcoxon)=0.062 p(sign)=0.062, N for 80% power: " in text
