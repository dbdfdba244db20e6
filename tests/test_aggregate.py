"""Cell formatting (one seed shows n = 1, not ± 0.00) and the seed-paired gains of a table, on numbers worked out by
hand."""

import math

import pandas as pd
import pytest

from mcmikd.aggregate import cell, fmt, show, to_latex


def _runs(*accs, status="ok"):
    return pd.DataFrame([{"best_acc": a, "status": status, "reason": None} for a in accs])


def test_a_single_seed_cell_says_n_1_instead_of_a_zero_spread():
    assert show(cell(_runs(89.56), "best")) == "89.56 (n = 1)"
    assert show(cell(_runs(89.56, 89.56), "best")) == "89.56 ± 0.00"  # two seeds that agree: a real zero spread
    assert show(cell(_runs(89.0, 90.0), "best")) == "89.50 ± 0.71"
    # a diverged second seed leaves one finished run: that cell too is n = 1
    assert show(cell(pd.concat([_runs(91.25), _runs(None, status="diverged")]), "best")) == (
        "91.25 (n = 1) [1 of 2 seeds: diverged]")
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
               "best_acc": acc, "last_acc": acc - 0.5, "omitted": "", "setting": "full", "reason": None}
              for s, acc in ((0, 70.0), (1, 71.0))]]
    pd.DataFrame(rows).to_csv(runs, index=False)
    reference = {"entries": [{"pair": "resnet56 → resnet20", "row": "kd", "teacher_objective": "mll",
                              "value": 70.66, "source": "RepDistiller"},
                             {"pair": "resnet56 → resnet20", "row": "crd", "value": 71.16, "source": "RepDistiller"}],
                 "notes": ["gains up to 3.32 %"], "differences": ["retrained teachers"]}
    layout = {"pairs": [["resnet56", "resnet20"]], "methods": ["ce", "kd"], "objectives": ["mll"],
              "labels": {"mll": "MLL"}, "colors": {"mll": "#000"}, "reference": reference}
    out = {k: str(tmp_path / f"main.{k}") for k in ("csv", "md", "tex")}
    write_table(str(runs), "main", layout, "last", out["csv"], out["md"], out["tex"])
    numbers = pd.read_csv(out["csv"])
    kd = numbers[(numbers["row"] == "kd")].iloc[0]
    # the table's primary metric is the last epoch; the paper is compared at its own choice (best epoch)
    assert kd["mean"] == 70.0 and kd["paper"] == 70.66 and kd["paper_metric"] == "best"
    assert kd["ours_at_paper_metric"] == 70.5 and math.isclose(kd["ours_minus_paper"], -0.16)
    md = open(out["md"]).read()
    assert "(last-epoch accuracy)" in md and "(best-epoch accuracy, selected on the test set; beside" in md
    assert "| pair resnet56 → resnet20, row kd, teacher_objective mll | 70.66 | 70.50 | -0.16 | RepDistiller |" in md
    assert "| pair resnet56 → resnet20, row crd | 71.16 | not run | – | RepDistiller |" in md
    assert "* The paper: gains up to 3.32 %" in md and "* Differs from the paper: retrained teachers" in md


# ----------------------------------------------------------------------- Δ over the control, "CMI not raised"
LAYOUT = {"pairs": [["resnet32", "resnet8"]], "methods": ["ce", "kd"], "objectives": ["mll", "mcmi", "ce_finetune"],
          "labels": {"mll": "MLL", "mcmi": "MCMI", "ce_finetune": "CE-FT"}, "colors": {},
          "controls": {"mcmi": "ce_finetune"}, "must_raise": {"mcmi": ["mll", "ce_finetune"]}}


def _students(accs: dict) -> pd.DataFrame:
    rows = []
    for objective, values in accs.items():
        rows += [{"role": "student", "method": "kd", "teacher_arch": "resnet32", "student": "resnet8",
                  "teacher_objective": objective, "best_acc": a, "status": "ok", "reason": None} for a in values]
    rows += [{"role": "student", "method": "ce", "teacher_arch": "none", "student": "resnet8",
              "teacher_objective": "none", "best_acc": 70.0, "status": "ok", "reason": None}]
    return pd.DataFrame(rows)


def _teachers(cmi: dict) -> pd.DataFrame:
    return pd.DataFrame([{"role": "teacher", "teacher_arch": "resnet32", "teacher_objective": o, "teacher_label": o,
                          "status": "ok", "model_acc": 90.0, "cmi_T1": v} for o, v in cmi.items()])


ACCS = {"mll": [80.0, 82.0], "mcmi": [83.0, 83.0], "ce_finetune": [82.5, 83.5]}  # means 81, 83, 83


def test_a_teacher_compared_with_its_control_gets_both_gains():
    from mcmikd.aggregate import compare_cells

    cells, rows = compare_cells(_students(ACCS), "kd", LAYOUT, "best")
    assert cells["KD, Δ MCMI"] == "+2.00" and cells["KD, Δ CE-FT"] == "+2.00"
    assert cells["KD, Δ MCMI vs CE-FT"] == "+0.00"  # the whole gain over MLL is the extra training
    by = {r["teacher_objective"]: r for r in rows}
    assert by["mcmi"]["delta"] == 2.0 and by["mcmi"]["delta_control"] == 0.0 and "delta_control" not in by["mll"]
    without = {**LAYOUT, "objectives": ["mll", "mcmi"]}  # no control compared: no second gain
    cells, rows = compare_cells(_students(ACCS), "kd", without, "best")
    assert list(cells) == ["KD, MLL", "KD, MCMI", "KD, Δ"] and all("delta_control" not in r for r in rows)


def test_the_main_table_cell_shows_both_gains_and_keeps_the_plain_form_without_a_control():
    from mcmikd.experiments.main import Main

    runs = pd.concat([_students(ACCS), _teachers({"mll": 0.10, "mcmi": 0.20, "ce_finetune": 0.15})])
    numbers, display = Main.table(runs, LAYOUT, "best")
    col = display.set_index("Top-1 % (best epoch)")["resnet32 → resnet8"]
    assert col["KD + MCMI teacher"] == "83.00 ± 0.00 (+2.00 vs MLL, +0.00 vs CE-FT)"
    assert col["KD + CE-FT teacher"] == "83.00 ± 0.71 (+2.00)" and col["KD"] == "81.00 ± 1.41"
    mcmi = numbers[(numbers["row"] == "kd") & (numbers["teacher_objective"] == "mcmi")].iloc[0]
    assert mcmi["delta"] == 2.0 and mcmi["delta_control"] == 0.0
    _, display = Main.table(runs[runs["teacher_objective"] != "ce_finetune"],
                            {**LAYOUT, "objectives": ["mll", "mcmi"]}, "best")
    assert display.set_index("Top-1 % (best epoch)")["resnet32 → resnet8"]["KD + MCMI teacher"] == \
        "83.00 ± 0.00 (+2.00)"
    assert display.attrs["footnotes"] == []


def test_an_mcmi_teacher_whose_cmi_is_not_above_its_control_is_marked_in_the_table_and_footnote():
    from mcmikd.aggregate import NOT_RAISED, cmi_not_raised, to_markdown
    from mcmikd.experiments.main import Main

    assert cmi_not_raised(_teachers({"mll": 0.10, "mcmi": 0.20, "ce_finetune": 0.15}), LAYOUT) == {}
    teachers = _teachers({"mll": 0.10, "mcmi": 0.15, "ce_finetune": 0.15})  # equal is not above
    assert list(cmi_not_raised(teachers, LAYOUT)) == [("resnet32", "mcmi")]
    assert "CE-FT 0.1500" in cmi_not_raised(teachers, LAYOUT)[("resnet32", "mcmi")]
    assert "MLL" not in cmi_not_raised(teachers, LAYOUT)[("resnet32", "mcmi")].split("≤")[1]  # it beat MLL
    numbers, display = Main.table(pd.concat([_students(ACCS), teachers]), LAYOUT, "best")
    col = display.set_index("Top-1 % (best epoch)")["resnet32 → resnet8"]
    assert (col["Teacher CMI (MCMI)"] == "0.1500 (n = 1)" + NOT_RAISED
            and col["Teacher acc. (MCMI)"].endswith(NOT_RAISED))
    assert col["KD + MCMI teacher"] == f"83.00 ± 0.00{NOT_RAISED} (+2.00 vs MLL, +0.00 vs CE-FT)"
    assert not col["KD + CE-FT teacher"].endswith(NOT_RAISED) and not col["Teacher CMI (MLL)"].endswith(NOT_RAISED)
    assert numbers.groupby("teacher_objective")["cmi_not_raised"].any().to_dict() == {
        "ce_finetune": False, "mcmi": True, "mll": False, "none": False}
    md = to_markdown(display, "t")
    assert md.rstrip().splitlines()[-1].startswith("† CMI not raised") and "0.1500" in md.splitlines()[-1]
    assert r"\footnotesize † CMI not raised" in to_latex(display)
    lower = _teachers({"mll": 0.16, "mcmi": 0.15})  # below its MLL teacher, no control in the runs table
    assert "MLL 0.1600" in cmi_not_raised(lower, LAYOUT)[("resnet32", "mcmi")]


# ----------------------------------------------------------------------- teacher seeds
def _seeded_teachers(cmi: dict, acc: dict | None = None) -> pd.DataFrame:
    """Teacher rows per (objective, teacher seed): `cmi[o]` and `acc[o]` list one value per seed."""
    acc = acc or {}
    return pd.DataFrame([{"role": "teacher", "teacher_arch": "resnet32", "teacher_objective": o, "teacher_label": o,
                          "teacher_seed": seed, "status": "ok", "cmi_T1": v,
                          "model_acc": (acc.get(o) or [90.0] * len(values))[seed]}
                         for o, values in cmi.items() for seed, v in enumerate(values)])


def test_teacher_rows_over_two_seeds_give_mean_std_and_the_cmi_check_counts_failing_seeds():
    from mcmikd.aggregate import NOT_RAISED, cmi_not_raised, not_raised_footnote
    from mcmikd.experiments.main import Main

    # seed 0: MCMI 0.20 above MLL 0.10 and CE-FT 0.15; seed 1: MCMI 0.12 not above CE-FT 0.14 (but above MLL 0.11)
    teachers = _seeded_teachers({"mll": [0.10, 0.11], "mcmi": [0.20, 0.12], "ce_finetune": [0.15, 0.14]},
                                {"mll": [90.0, 92.0], "mcmi": [91.0, 91.0], "ce_finetune": [89.0, 93.0]})
    flagged = cmi_not_raised(teachers, LAYOUT)
    assert list(flagged) == [("resnet32", "mcmi")]
    assert "CMI not raised for 1 of 2 teacher seeds" in flagged[("resnet32", "mcmi")]
    assert ("seed 1: 0.1200 ≤ CE-FT 0.1400" in flagged[("resnet32", "mcmi")]
            and "seed 0" not in flagged[("resnet32", "mcmi")])
    # compared across seeds it would pass (mean 0.16 > 0.145 > 0.105): the check is per seed
    assert cmi_not_raised(_seeded_teachers({"mll": [0.10], "mcmi": [0.16], "ce_finetune": [0.145]}), LAYOUT) == {}
    numbers, display = Main.table(pd.concat([_students(ACCS), teachers]), LAYOUT, "best")
    col = display.set_index("Top-1 % (best epoch)")["resnet32 → resnet8"]
    assert col["Teacher acc. (MLL)"] == "91.00 ± 1.41" and col["Teacher acc. (MCMI)"] == "91.00 ± 0.00" + NOT_RAISED
    assert col["Teacher CMI (MLL)"] == "0.1050 ± 0.0071" and col["Teacher CMI (MCMI)"] == "0.1600 ± 0.0566" + NOT_RAISED
    mll = numbers[(numbers["row"] == "teacher") & (numbers["teacher_objective"] == "mll")].iloc[0]
    assert (mll["mean"], mll["n"], round(mll["cmi"], 4)) == (91.0, 2, 0.105)
    assert "CMI not raised for 1 of 2 teacher seeds" in not_raised_footnote(flagged)[0]
    # both seeds fail: 2 of 2
    both = _seeded_teachers({"mll": [0.10, 0.11], "mcmi": [0.09, 0.12], "ce_finetune": [0.15, 0.14]})
    assert "for 2 of 2 teacher seeds" in cmi_not_raised(both, LAYOUT)[("resnet32", "mcmi")]


def test_a_collapsed_teacher_seed_is_counted_in_its_cell():
    from mcmikd.aggregate import show_teacher, teacher_cell

    rows = _seeded_teachers({"mcmi": [0.2, 0.3, 0.4]}, {"mcmi": [90.0, 10.0, 92.0]})
    rows.loc[1, "status"] = "collapsed"
    assert show_teacher(teacher_cell(rows, "model_acc")) == "64.00 ± 46.78 (collapsed: 1 of 3 seeds)"
    assert show_teacher(teacher_cell(rows.iloc[[1]], "model_acc")) == "10.00 (n = 1) (collapsed)"


# ----------------------------------------------------------------------- seed-paired gains
def _paired_runs(ce=80.0):
    acc = {("mll", 0): 90.0, ("mll", 1): 80.0, ("mll", 2): 70.0,     # large seed spread, shared by every teacher
           ("mcmi", 0): 91.0, ("mcmi", 1): 81.5, ("mcmi", 2): 71.0,  # +1, +1.5, +1 over MLL, seed by seed
           ("ce_finetune", 0): 90.0, ("ce_finetune", 1): 80.0}       # seed 2 did not finish
    rows = [{"role": "student", "teacher_arch": "resnet56", "student": "resnet20", "setting": "full",
             "method": "kd", "teacher_objective": o, "seed": s, "teacher_seed": s, "status": "ok", "best_acc": a}
            for (o, s), a in acc.items()]
    rows.append({**rows[-1], "seed": 2, "teacher_seed": 2, "status": "diverged", "best_acc": float("nan")})
    rows += [{"role": "student", "teacher_arch": "none", "student": "resnet20", "setting": "full", "method": "ce",
              "teacher_objective": "none", "seed": s, "teacher_seed": s, "status": "ok", "best_acc": ce}
             for s in (0, 1, 2)]
    return pd.DataFrame(rows)


def test_paired_gains_difference_each_seed_against_the_same_seed_of_the_reference_and_the_control():
    from mcmikd.aggregate import paired_display, paired_gains

    gains = paired_gains(_paired_runs(), ["mll", "mcmi", "ce_finetune"], {"mcmi": "ce_finetune"}, "best",
                         margin=5).set_index("comparison")
    vs_mll = gains.loc["mcmi − mll"]
    assert (vs_mll["n"] == 3 and vs_mll["mean"] == pytest.approx(7 / 6)
            and vs_mll["std"] == pytest.approx(0.288675, 1e-5))
    # t = (7/6) / (0.2887/√3) = 7.0 on 2 df: p = 0.0198; Holm over the two tests with a p (the third has zero width)
    assert vs_mll["p"] == pytest.approx(0.0198, abs=1e-4) and vs_mll["p_holm"] == pytest.approx(2 * vs_mll["p"])
    assert vs_mll["resolved"] == "+"  # the unpaired spread (10 points) would hide it; the paired one does not
    vs_control = gains.loc["mcmi − ce_finetune"]
    assert vs_control["n"] == 2 and vs_control["mean"] == pytest.approx(1.25) and vs_control["resolved"] == ""
    zero = gains.loc["ce_finetune − mll"]  # 0 and 0: an interval without width is never resolved
    assert zero["mean"] == 0.0 and bool(zero["zero_width"]) and zero["resolved"] == "" and math.isnan(zero["p_holm"])
    assert (gains["not_working"] == False).all()  # noqa: E712  every arm within 5 points of the no-KD 80 %
    shown = paired_display(gains.reset_index()).iloc[0]
    assert shown["mcmi − mll"] == "+1.17 ± 0.29 (3) *"
    assert shown["mcmi − ce_finetune"] == "+1.25 ± 0.35 (2, n < 3)"
    assert shown["ce_finetune − mll"] == "+0.00 ± 0.00 (2, n < 3, zero width)"


def test_a_gain_between_two_students_that_both_fail_is_bracketed_and_left_out_of_holm():
    from mcmikd.aggregate import paired_display, paired_gains, pooled_gains

    gains = paired_gains(_paired_runs(ce=99.0), ["mll", "mcmi", "ce_finetune"], {"mcmi": "ce_finetune"}, "best",
                         margin=5)
    assert (gains["not_working"] == True).all()  # noqa: E712  every arm > 5 points below the no-KD 99 %
    assert gains["p_holm"].isna().all() and (gains["resolved"] == "").all()
    assert paired_display(gains).iloc[0]["mcmi − mll"] == "[+1.17 ± 0.29 (3)]"
    assert not len(pooled_gains(gains))  # nothing to pool


def test_pooled_gains_take_the_teacher_seed_as_the_unit():
    from mcmikd.aggregate import paired_gains, pooled_gains

    runs = _paired_runs()
    other = runs[runs["method"] == "kd"].assign(setting="frac0.1")  # a second cell, 2 points more gain per seed
    other.loc[other["teacher_objective"] == "mcmi", "best_acc"] += 2
    runs = pd.concat([runs, other, runs[runs["method"] == "ce"].assign(setting="frac0.1")], ignore_index=True)
    gains = paired_gains(runs, ["mll", "mcmi"], {}, "best", margin=5)
    pooled = pooled_gains(gains).iloc[0]
    # per teacher seed the mean over the two cells: (1+3)/2, (1.5+3.5)/2, (1+3)/2 = 2, 2.5, 2
    assert pooled["cells"] == 2 and pooled["seeds"] == 3 and pooled["mean"] == pytest.approx(13 / 6)
    assert pooled["ci95"] == pytest.approx(4.302653 * 0.288675 / math.sqrt(3), 1e-4)
    assert pooled["resolved"] == "+" and pooled["mde"] > 0 and pooled["cell_mde"] > 0
