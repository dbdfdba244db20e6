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


def test_the_papers_numbers_are_set_beside_ours_by_matching_table_rows(tmp_path):
    from mcmikd.aggregate import write_table

    runs = tmp_path / "runs.csv"
    rows = [{"experiment": "main", "role": "teacher", "teacher_arch": "resnet56", "teacher_objective": "mll",
             "teacher_variant": "mll", "teacher_label": "MLL", "status": "ok", "model_acc": 72.0, "cmi_T1": 0.1,
             "omitted": "", "setting": "", "reason": None},
            *[{"experiment": "main", "role": "student", "teacher_arch": "resnet56", "teacher_objective": "mll",
               "teacher_variant": "mll", "student": "resnet20", "method": "kd", "seed": s, "status": "ok",
               "best_acc": acc, "omitted": "", "setting": "full", "reason": None} for s, acc in ((0, 70.0), (1, 71.0))]]
    pd.DataFrame(rows).to_csv(runs, index=False)
    reference = {"entries": [{"pair": "resnet56 → resnet20", "row": "kd", "teacher_objective": "mll",
                              "value": 70.66, "source": "RepDistiller"},
                             {"pair": "resnet56 → resnet20", "row": "crd", "value": 71.16, "source": "RepDistiller"}],
                 "notes": ["gains up to 3.32 %"], "differences": ["retrained teachers"]}
    layout = {"pairs": [["resnet56", "resnet20"]], "methods": ["ce", "kd"], "objectives": ["mll"],
              "labels": {"mll": "MLL"}, "colors": {"mll": "#000"}, "reference": reference}
    out = {k: str(tmp_path / f"main.{k}") for k in ("csv", "md", "tex")}
    write_table(str(runs), "main", layout, "best", out["csv"], out["md"], out["tex"])
    numbers = pd.read_csv(out["csv"])
    kd = numbers[(numbers["row"] == "kd")].iloc[0]
    assert kd["mean"] == 70.5 and kd["paper"] == 70.66 and math.isclose(kd["ours_minus_paper"], -0.16)
    md = open(out["md"]).read()
    assert "| pair resnet56 → resnet20, row kd, teacher_objective mll | 70.66 | 70.50 | -0.16 | RepDistiller |" in md
    assert "| pair resnet56 → resnet20, row crd | 71.16 | not run | – | RepDistiller |" in md
    assert "* The paper: gains up to 3.32 %" in md and "* Differs from the paper: retrained teachers" in md
