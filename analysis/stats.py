"""Paired comparison of two configs run on the same seeds (`tuner compare A.yaml B.yaml --seeds N`).

Seed s of A and seed s of B share the data split and initialisation stream, so the per-seed
difference B - A removes most of the seed-to-seed noise: the interval is a Student t interval
on those paired differences; the verdict rests on that interval alone. The t quantile is computed
here by inverting the regularised incomplete beta function (exact for any df, no table).

Beside it, for settling a claim on real data: the paired t-test, Wilcoxon signed-rank and exact sign
test p-values (the last two do not assume normal differences), and the seeds a paired t-test needs
for 80% power at the observed effect (noncentral t); these use scipy.stats.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

NO_DIFFERENCE = "no detectable difference at this N"
POWER_CAP = 10_000  # seeds_for_power gives inf beyond this (shown as ">10000")
NAN = float("nan")


# -- Student t quantile ------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (e.g. p=0.975, df=4 -> 2.776), by bisection on t_cdf."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket: heavy tails at df=1 need t in the hundreds
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# -- paired tests and power ---------------------------------------------------------------------
def _mean_sd(d: list[float]) -> tuple[float, float]:
    """Mean and sample SD (n - 1) of the paired differences; needs len(d) >= 2."""
    mean = sum(d) / len(d)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))


def paired_t_p(d: list[float]) -> float:
    """Two-sided p-value of the paired t-test on differences `d` (0 when all are the same non-zero value)."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return NAN
    mean, sd = _mean_sd(d)
    if sd == 0:
        return NAN if mean == 0 else 0.0
    return float(2.0 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def wilcoxon_p(d: list[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zeros dropped, exact for small N without ties)."""
    from scipy import stats

    if len(d) < 2 or not any(d):
        return NAN
    with warnings.catch_warnings():  # zeros / ties switch scipy to the normal approximation, with a warning
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d).pvalue)


def sign_p(d: list[float]) -> float:
    """Exact two-sided sign test: how many of the non-zero differences are positive, against Binomial(n, 1/2)."""
    from scipy import stats

    nonzero = [x for x in d if x != 0]
    if len(d) < 2 or not nonzero:
        return NAN
    return float(stats.binomtest(sum(x > 0 for x in nonzero), len(nonzero), 0.5).pvalue)


def t_power(n: int, effect: float, alpha: float = 0.05) -> float:
    """Power of a two-sided one-sample (paired) t-test with n pairs at standardised effect d_z = mean/SD."""
    from scipy import stats

    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    lower = float(stats.nct.cdf(-crit, df, nc))  # the wrong-sign tail: nan from scipy once it underflows
    return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def seeds_for_power(d: list[float], power: float = 0.8, alpha: float = 0.05, cap: int = POWER_CAP) -> float:
    """The smallest N (>= 2) whose paired t-test reaches `power` if the true mean and SD of the differences
    were the observed ones; nan when n < 2 or the SD is 0, inf when even `cap` seeds fall short."""
    if len(d) < 2:
        return NAN
    mean, sd = _mean_sd(d)
    if sd == 0:
        return NAN
    effect = mean / sd
    if t_power(cap, effect, alpha) < power:
        return math.inf
    lo, hi = 1, cap  # power rises with N: t_power(lo) < power <= t_power(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if t_power(mid, effect, alpha) >= power else (mid, hi)
    return float(hi)


# -- paired comparison -------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    metric: str
    mode: str  # max | min: which direction is "better"
    n: int  # seeds with a finite value in both A and B
    mean_a: float
    mean_b: float
    diff: float  # mean of the paired differences B - A
    ci_low: float  # nan when n < 2
    ci_high: float
    rel_pct: float  # 100 * diff / |mean_a|; nan when mean_a == 0
    verdict: str  # better | worse | no detectable difference at this N | N too small ...
    confidence: float = 0.95
    p_t: float = NAN  # two-sided paired t-test; nan when n < 2 or every difference is 0
    p_wilcoxon: float = NAN  # Wilcoxon signed-rank on the differences; nan when n < 2 or all are 0
    p_sign: float = NAN  # exact two-sided sign test, zero differences dropped; nan when none is left
    n_power: float = NAN  # seeds for 80% power (alpha .05, two-sided) at the observed effect; inf: > POWER_CAP


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def compare_one(a: list[float], b: list[float], metric: str, mode: str = "max", confidence: float = 0.95) -> Row:
    """One metric: `a[i]` and `b[i]` come from the same seed."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    d = [y - x for x, y in pairs]
    mean_a, mean_b, diff = _mean([x for x, _ in pairs]), _mean([y for _, y in pairs]), _mean(d)
    rel = 100.0 * diff / abs(mean_a) if n and mean_a != 0 else float("nan")
    if n < 2:
        return Row(metric, mode, n, mean_a, mean_b, diff, float("nan"), float("nan"), rel,
                   f"N too small (N={n}): run at least 2 seeds for a confidence interval", confidence)
    sd = _mean_sd(d)[1]
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    lo, hi = diff - half, diff + half
    if lo > 0 or hi < 0:  # the interval excludes 0: B differs from A; mode says which way is good
        verdict = "better" if (lo > 0) == (mode == "max") else "worse"
    else:
        verdict = NO_DIFFERENCE
    return Row(metric, mode, n, mean_a, mean_b, diff, lo, hi, rel, verdict, confidence,
               paired_t_p(d), wilcoxon_p(d), sign_p(d), seeds_for_power(d))


def compare(
    a: Mapping[int, Mapping[str, float]],
    b: Mapping[int, Mapping[str, float]],
    metrics: list[str] | tuple[str, ...],
    mode_by_metric: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> list[Row]:
    """Paired comparison of A and B, one Row per metric.

    `a`, `b`: seed -> {metric: value}. Only seeds present in both are paired; a missing or
    non-finite value (an errored run) drops that seed for that metric, so Row.n can differ
    between metrics. `mode_by_metric[m]` is "max" (default) or "min".
    """
    seeds = sorted(set(a) & set(b), key=str)
    modes = mode_by_metric or {}
    nan = float("nan")
    return [
        compare_one([float(a[s].get(m, nan)) for s in seeds], [float(b[s].get(m, nan)) for s in seeds],
                    m, modes.get(m, "max"), confidence)
        for m in metrics
    ]


def _g(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def p_text(p: float) -> str:
    """A p-value to two significant digits ('0.03', '0.0625' -> '0.062'), '<0.0001' below that, '–' for nan."""
    if not math.isfinite(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def power_text(n: float) -> str:
    """Row.n_power as text: '9', '>10000', or '–' (undefined: N < 2 or zero spread)."""
    if math.isnan(n):
        return "–"
    return f">{POWER_CAP}" if math.isinf(n) else str(int(n))


def significance_text(r: Row) -> str:
    """'p(t)=0.03 p(Wilcoxon)=0.06 p(sign)=0.11, N for 80% power: 9'"""
    return (f"p(t)={p_text(r.p_t)} p(Wilcoxon)={p_text(r.p_wilcoxon)} p(sign)={p_text(r.p_sign)}, "
            f"N for 80% power: {power_text(r.n_power)}")


def markdown_table(rows: list[Row], a_name: str = "A", b_name: str = "B") -> str:
    """GitHub-flavoured Markdown table of `compare` rows."""
    conf = f"{round(100 * rows[0].confidence)}% CI" if rows else "CI"
    lines = [f"| metric | N | mean {a_name} | mean {b_name} | {b_name} − {a_name} | {conf} | rel. | verdict "
             "| p(t) | p(Wilcoxon) | p(sign) | N for 80% power |",
             "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        ci = f"[{_g(r.ci_low, True)}, {_g(r.ci_high, True)}]" if math.isfinite(r.ci_low) else "–"
        rel = f"{r.rel_pct:+.1f}%" if math.isfinite(r.rel_pct) else "–"
        lines.append(f"| {r.metric} ({r.mode}) | {r.n} | {_g(r.mean_a)} | {_g(r.mean_b)} | {_g(r.diff, True)} "
                     f"| {ci} | {rel} | {r.verdict} | {p_text(r.p_t)} | {p_text(r.p_wilcoxon)} "
                     f"| {p_text(r.p_sign)} | {power_text(r.n_power)} |")
    return "\n".join(lines)


def verdict_lines(rows: list[Row]) -> str:
    """One Markdown bullet per metric: the verdict (95% t-interval), then the other tests and the power N."""
    return "\n".join(f"- {r.metric}: {r.verdict}; {significance_text(r)}" for r in rows)
