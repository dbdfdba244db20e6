"""The MCMI-gain summary of a main table, on numbers worked out by hand."""

import math

import pandas as pd

from mcmikd.aggregate import gain_summary


def _row(pair, method, kind, mean, std, n=3):
    return {"pair": pair, "row": method, "teacher_objective": kind, "mean": mean, "std": std, "n": n}


def test_gain_summary_counts_gains_and_resolved_differences():
    rows = [_row("a", "teacher", "mll", 90.0, math.nan, 1), _row("a", "ce", "none", 80.0, 1.0)]
    # KD: pair a gains 3.0 with s.e. sqrt(2 * 0.3**2 / 3) ≈ 0.245 (resolved); pair b loses 0.1 (not resolved)
    rows += [_row("a", "kd", "mll", 85.0, 0.3), _row("a", "kd", "mcmi", 88.0, 0.3),
             _row("b", "kd", "mll", 70.0, 3.0), _row("b", "kd", "mcmi", 69.9, 3.0)]
    # CRD: one pair, a loss of 2.0 with s.e. sqrt(2 * 0.6**2 / 3) ≈ 0.49 (resolved); the second pair not measured
    rows += [_row("a", "crd", "mll", 90.0, 0.6), _row("a", "crd", "mcmi", 88.0, 0.6),
             _row("b", "crd", "mll", math.nan, math.nan, 0), _row("b", "crd", "mcmi", math.nan, math.nan, 0)]
    summary = gain_summary(pd.DataFrame(rows)).set_index("Framework")
    assert list(summary.index) == ["KD", "CRD"]
    assert summary.loc["KD"].to_dict() == {"Teacher": "mcmi − mll", "pairs": 2, "mean Δ": "+1.45", "Δ > 0": 1, "Δ > +2 s.e.": 1,
                                           "Δ < −2 s.e.": 0}
    assert summary.loc["CRD"].to_dict() == {"Teacher": "mcmi − mll", "pairs": 1, "mean Δ": "-2.00", "Δ > 0": 0, "Δ > +2 s.e.": 0,
                                            "Δ < −2 s.e.": 1}
