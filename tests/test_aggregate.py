"""Cell formatting (one seed shows n = 1, not ± 0.00) and the MCMI-gain summary of a main table, on numbers worked
out by hand."""

import math

import pandas as pd

from mcmikd.aggregate import cell, fmt, gain_summary, show, to_latex


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


def _runs(*accs, status="ok"):
    return pd.DataFrame([{"best_acc": a, "status": status, "reason": None} for a in accs])


def test_a_single_seed_cell_says_n_1_instead_of_a_zero_spread():
    assert show(cell(_runs(89.56), "best")) == "89.56 (n = 1)"
    assert show(cell(_runs(89.56, 89.56), "best")) == "89.56 ± 0.00"  # two seeds that agree: a real zero spread
    assert show(cell(_runs(89.0, 90.0), "best")) == "89.50 ± 0.71"
    # a diverged second seed leaves one finished run: that cell too is n = 1
    assert show(cell(pd.concat([_runs(91.25), _runs(None, status="diverged")]), "best")) == "91.25 (n = 1)"
    assert show(cell(_runs(None, status="diverged"), "best")) == "diverged"
    assert fmt(1.5, 0.0, n=1) == "1.50 (n = 1)" and fmt(1.5, 0.25, n=2) == "1.50 ± 0.25" and fmt(1.5) == "1.50"
    assert fmt(math.nan, math.nan, n=0) == "–"
    assert "89.56 (n = 1)" in to_latex(pd.DataFrame({"KD": [show(cell(_runs(89.56), "best"))]}))
