"""The statistics every reading of this project rests on: seed-paired gains, pooled estimates, multiple comparisons,
minimal detectable effects, and the agree / differ / can't-tell verdict of `python -m mcmikd compare`.

Units: accuracies and their differences in points of top-1 % (or of one class's recall %), CMI in nats. Every
interval is two-sided at ``ALPHA`` = 0.05 unless a function says otherwise. Small samples are the rule here (3 seeds),
so every interval is a Student-t interval with its degrees of freedom, never a normal one, and a result with fewer
than ``MIN_SEEDS`` seeds or with zero spread (all seeds gave the same gain: accuracy moves in steps of one test image)
is shown but never counted as resolved (`resolved`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

ALPHA = 0.05  # two-sided level of every interval and test
POWER = 0.80  # of the minimal detectable effect
MIN_SEEDS = 3  # fewer paired seeds: an interval is shown, never counted as resolved


def _t():
    from scipy.stats import t

    return t


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


# --------------------------------------------------------------------------------------------- one sample
def paired(diffs: Sequence[float], alpha: float = ALPHA) -> dict:
    """The one-sample (paired) t analysis of per-seed differences (points): n, mean, std (ddof 1), se = std/√n,
    ci (half-width of the 1−alpha Student-t interval, t_{1−α/2, n−1}·se), p (two-sided p-value of mean = 0) and
    zero_width (std == 0 with n ≥ 2: every seed gave the same difference, so the interval has no width and p is
    undefined). NaN where n < 2."""
    d = _finite(diffs)
    n = len(d)
    mean = sum(d) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "se": math.nan, "ci": math.nan, "p": math.nan,
                "zero_width": False}
    std = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    se = std / math.sqrt(n)
    t = _t()
    if std == 0:
        return {"n": n, "mean": mean, "std": 0.0, "se": 0.0, "ci": 0.0, "p": math.nan, "zero_width": True}
    return {"n": n, "mean": mean, "std": std, "se": se, "ci": float(t.ppf(1 - alpha / 2, n - 1)) * se,
            "p": float(2 * t.sf(abs(mean) / se, n - 1)), "zero_width": False}


def mde(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable effect of a paired t-test (points): the true mean difference that a two-sided test at
    `alpha` detects with probability `power`, given the per-seed differences' std and n paired seeds,
    (t_{1−α/2, n−1} + t_{power, n−1})·std/√n (the usual approximation, e.g. Cohen 1988, ch. 2). NaN for n < 2."""
    if n < 2 or std is None or math.isnan(std):
        return math.nan
    t = _t()
    return float(t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * std / math.sqrt(n)


# --------------------------------------------------------------------------------------------- many tests
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error ≤ α when adjusted p < α; Holm 1979). NaN p-values (tests
    that could not be run) are left NaN and are not counted in the family."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, out, running = len(order), [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values; false discovery rate ≤ α when q < α; BH 1995). NaN stays NaN."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i], reverse=True)
    m, out, running = len(order), [math.nan] * len(pvalues), 1.0
    for k, i in enumerate(order):
        rank = m - k
        running = min(running, pvalues[i] * m / rank)
        out[i] = min(1.0, running)
    return out


def resolved(n: int, zero_width: bool, p_adjusted: float, mean: float, alpha: float = ALPHA) -> str:
    """"+" or "−" when a gain is resolved — at least MIN_SEEDS paired seeds, an interval with width, and a
    multiplicity-adjusted p below `alpha` — else ""."""
    if n < MIN_SEEDS or zero_width or p_adjusted is None or math.isnan(p_adjusted) or not p_adjusted < alpha:
        return ""
    return "+" if mean > 0 else "−"


# --------------------------------------------------------------------------------------------- two samples
def difference(ours: Sequence[float], theirs: Sequence[float], floor: float = 0.0) -> dict:
    """The difference of two independent samples' means (ours − theirs) with its standard error and degrees of
    freedom. Each side's std is floored at `floor` (the measurement's resolution, e.g. one test image in points: a
    spread below it is not measured). Both sides with ≥ 2 values: Welch's se and Welch–Satterthwaite df. One side
    with one value (a single run, or a published mean whose spread is not given): the other side's std stands for
    both, se = s·√(1/n₁ + 1/n₂), df = that side's n − 1. Neither side with 2 values: se and df NaN."""
    a, b = _finite(ours), _finite(theirs)
    na, nb = len(a), len(b)
    out = {"n_ours": na, "n_theirs": nb, "d": math.nan, "se": math.nan, "df": math.nan}
    if not na or not nb:
        return out
    ma, mb = sum(a) / na, sum(b) / nb
    out["d"] = ma - mb

    def sd(v, m):
        return max(math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)), floor)

    if na >= 2 and nb >= 2:
        va, vb = sd(a, ma) ** 2 / na, sd(b, mb) ** 2 / nb
        se2 = va + vb
        out["se"] = math.sqrt(se2)
        out["df"] = (se2 ** 2 / ((va ** 2 / (na - 1) if va else 0) + (vb ** 2 / (nb - 1) if vb else 0)) if se2
                     else math.inf)
    elif na >= 2 or nb >= 2:
        s, df = (sd(a, ma), na - 1) if na >= 2 else (sd(b, mb), nb - 1)
        out["se"], out["df"] = s * math.sqrt(1 / na + 1 / nb), df
    return out


def difference_from_summary(mean: float, std: float, n: int, ref_mean: float, ref_std: float | None, ref_n: int,
                            floor: float = 0.0) -> dict:
    """`difference` from summaries (mean, std, n) instead of values, for a published number: `ref_std` None when
    the publication gives no spread (then ours stands for both sides)."""
    out = {"n_ours": n, "n_theirs": ref_n, "d": mean - ref_mean, "se": math.nan, "df": math.nan}
    s = max(std, floor) if n >= 2 and not math.isnan(std) else math.nan
    if ref_std is not None and ref_n >= 2 and n >= 2:
        va, vb = s ** 2 / n, max(ref_std, floor) ** 2 / ref_n
        out["se"] = math.sqrt(va + vb)
        out["df"] = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (ref_n - 1))
    elif n >= 2:
        out["se"], out["df"] = s * math.sqrt(1 / n + 1 / max(ref_n, 1)), n - 1
    return out


def equivalence(d: float, se: float, df: float, margin: float) -> dict:
    """p-values of the two readings of a difference `d` with standard error `se` against a margin `margin`
    (same units): p_differ, of the one-sided test that |true difference| > margin, t.sf((|d| − margin)/se, df);
    p_agree, of the two one-sided tests (TOST, Schuirmann 1987) that |true difference| < margin,
    t.sf((margin − |d|)/se, df). se = 0 (both sides without spread) gives 0 or 1; NaN se or df gives NaN."""
    if any(v is None or math.isnan(v) for v in (d, se, df, margin)):
        return {"p_differ": math.nan, "p_agree": math.nan}
    if se == 0:
        return {"p_differ": 0.0 if abs(d) > margin else 1.0, "p_agree": 0.0 if abs(d) < margin else 1.0}
    t = _t()
    return {"p_differ": float(t.sf((abs(d) - margin) / se, df)), "p_agree": float(t.sf((margin - abs(d)) / se, df))}
