"""The run's reading (mcmikd.reading) and the choices made in the DAG (mcmikd.choices), on small hand-made tables and
on committed runs; fast, no workflow run (the rules themselves run in tests/test_workflow.py)."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from mcmikd import choices, reading

LAYOUT = {"objectives": ["mll", "mcmi", "ce_finetune"],
          "labels": {"mll": "MLL", "mcmi": "MCMI", "ce_finetune": "CE-FT"}}
PAIR = "resnet20 → resnet8"


def pooled(comparison="mcmi − mll", mean=0.0, ci95=1.0, resolved=math.nan, seeds=4, cells=2, mde=1.3, metric="last"):
    return {"comparison": comparison, "measure": "top-1", "mean": mean, "ci95": ci95, "resolved": resolved,
            "seeds": seeds, "cells": cells, "mde": mde, "cell_mde": 2.0, "metric": metric, "level": "pooled"}


def cell(comparison="mcmi − mll", resolved=math.nan, metric="last"):
    return {"pair": PAIR, "setting": "full", "method": "kd", "measure": "top-1", "comparison": comparison, "n": 4,
            "mean": 0.5, "ci95": 1.0, "resolved": resolved, "not_working": False, "metric": metric, "level": "cell"}


def room(comparison, mean, ci95, metric="last"):
    return {"pair": PAIR, "setting": "full", "comparison": comparison, "n": 4, "mean": mean, "ci95": ci95,
            "metric": metric, "level": "headroom"}


def gains(*rows):
    return pd.DataFrame(list(rows))


def main_table(teacher=60.0, ce=30.0, kd=45.0):
    return pd.DataFrame([
        {"pair": PAIR, "row": "teacher", "teacher_objective": "mll", "mean": teacher, "n": 4},
        {"pair": PAIR, "row": "teacher", "teacher_objective": "mcmi", "mean": teacher + 0.5, "n": 4},
        {"pair": PAIR, "row": "ce", "teacher_objective": "none", "mean": ce, "n": 4},
        {"pair": PAIR, "row": "kd", "teacher_objective": "mll", "mean": kd, "n": 4},
        {"pair": PAIR, "row": "kd", "teacher_objective": "mcmi", "mean": kd + 0.2, "n": 4},
    ])


# ----------------------------------------------------------------------------------------------- teacher comparisons
def test_a_resolved_positive_gain_is_called_resolved_with_its_interval():
    [sentence] = reading.comparison_sentences(
        gains(pooled(mean=1.5, ci95=0.5, resolved="+"), cell(resolved="+"), cell()), LAYOUT["labels"], "last")
    assert "MCMI teachers against those of the MLL teachers" in sentence
    assert "pooled gain +1.50 points, 95 % interval [+1.00, +2.00]" in sentence
    assert "resolved: the MCMI teachers' students are better" in sentence
    assert "1 better and 0 worse, of 2" in sentence and "within noise" not in sentence


def test_a_resolved_negative_gain_says_worse():
    [sentence] = reading.comparison_sentences(gains(pooled(mean=-1.5, ci95=0.5, resolved="−")), LAYOUT["labels"],
                                              "last")
    assert "[−2.00, −1.00]" in sentence and "students are worse" in sentence and "better" not in sentence


def test_a_gain_whose_interval_covers_zero_is_within_noise_with_its_mde():
    [sentence] = reading.comparison_sentences(gains(pooled(mean=0.3, ci95=1.0, mde=1.34), cell(), cell()),
                                              LAYOUT["labels"], "last")
    assert "within noise: the interval covers 0" in sentence
    assert "(MDE, 80 % power) is 1.34 points" in sentence
    assert "resolved:" not in sentence and "better" not in sentence
    assert "None of the 2 single cells is resolved after Holm's correction" in sentence


def test_an_interval_excluding_zero_with_two_seeds_is_not_counted():
    [sentence] = reading.comparison_sentences(gains(pooled(mean=2.0, ci95=1.0, seeds=2)), LAYOUT["labels"], "last")
    assert "not resolved: the interval excludes 0, but 2 teacher seeds are too few" in sentence
    assert "better" not in sentence


def test_one_teacher_seed_gives_no_interval_and_no_claim():
    [sentence] = reading.comparison_sentences(gains(pooled(mean=2.0, ci95=math.nan, seeds=1, mde=math.nan)),
                                              LAYOUT["labels"], "last")
    assert "one teacher seed gives no interval" in sentence and "interval [" not in sentence


def test_only_the_primary_metric_is_read():
    rows = gains(pooled(mean=0.1, metric="last"), pooled(mean=3.0, ci95=0.5, resolved="+", metric="best"))
    [sentence] = reading.comparison_sentences(rows, LAYOUT["labels"], "last")
    assert "+0.10" in sentence and "+3.00" not in sentence


def test_no_pooled_row_says_so():
    assert "no pooled seed-paired gain" in reading.comparison_sentences(pd.DataFrame(), {}, "last")[0]


# ----------------------------------------------------------------------------------------------- headroom
def test_headroom_needs_the_teacher_and_kd_above_the_no_teacher_student():
    rows = gains(room("teacher − no teacher", 20.0, 3.0), room("kd − no teacher", 12.0, 2.0),
                 room("at − no teacher", 0.5, 2.0))
    [sentence] = reading.headroom_sentences(rows, main_table(), LAYOUT, "last")
    assert "MLL teacher − student without a teacher +20.00 points [+17.00, +23.00]" in sentence
    assert "KD student of the MLL teacher − student without a teacher +12.00 points" in sentence
    assert "AT within noise of the student without a teacher" in sentence
    assert sentence.endswith("there is room for a better teacher to show.")


def test_no_headroom_when_the_teacher_is_not_above_the_no_teacher_student():
    rows = gains(room("teacher − no teacher", 0.4, 1.0), room("kd − no teacher", 0.2, 1.0))
    [sentence] = reading.headroom_sentences(rows, main_table(), LAYOUT, "last")
    assert "no headroom" in sentence and "room for a better teacher" not in sentence


def test_headroom_not_shown_when_kd_is_within_noise_of_the_no_teacher_student():
    rows = gains(room("teacher − no teacher", 20.0, 3.0), room("kd − no teacher", 0.5, 1.0))
    [sentence] = reading.headroom_sentences(rows, main_table(), LAYOUT, "last")
    assert "headroom not shown" in sentence and "may not learn from a teacher" in sentence


def test_kd_below_the_no_teacher_student_is_no_headroom():
    rows = gains(room("teacher − no teacher", 20.0, 3.0), room("kd − no teacher", -5.0, 1.0))
    [sentence] = reading.headroom_sentences(rows, main_table(), LAYOUT, "last")
    assert "no headroom for KD" in sentence


def test_without_headroom_rows_the_main_table_means_are_read_without_a_claim():
    [sentence] = reading.headroom_sentences(gains(pooled()), main_table(teacher=60, ce=30, kd=45), LAYOUT, "last")
    assert "+30.00 points" in sentence and "+15.00 points" in sentence
    assert "headroom is not tested here" in sentence and "room for a better teacher" not in sentence


# ----------------------------------------------------------------------------------------------- the page
def test_a_run_without_the_main_experiment_says_there_is_no_main_table():
    text = reading.reading(None, None, None, "last")
    assert reading.NO_MAIN in text and "pooled gain" not in text


def test_the_reading_names_the_split_and_the_epoch():
    text = reading.reading(main_table(), gains(pooled()), LAYOUT, "last")
    assert "last-epoch top-1 test accuracy" in text
    val = reading.reading(main_table(), gains(pooled()), {**LAYOUT, "evaluated_on": "validation"}, "best")
    assert "best-epoch (selected on the validation set) top-1 validation accuracy" in val


def test_labels_are_escaped_for_restructuredtext():
    assert reading.rst_text("a_b*c|d`e") == "a\\_b\\*c\\|d\\`e"


def test_write_reading_writes_the_reading_and_a_first_page_that_renders(tmp_path):
    """The first page is what the report renders: Jinja over the whole page (the static part's fields), then
    docutils; the reading sits in a raw block, so its text reaches the HTML as written."""
    import jinja2
    from docutils.core import publish_parts

    table, gain = tmp_path / "main.csv", tmp_path / "main_gains.csv"
    main_table().to_csv(table, index=False)
    gains(pooled(mean=0.3), room("teacher − no teacher", 20.0, 3.0), room("kd − no teacher", 12.0, 2.0)).to_csv(
        gain, index=False)
    static = ROOT / "workflow" / "report" / "workflow.rst"
    text = reading.write_reading(str(tmp_path / "reading.rst"), str(tmp_path / "first_page.rst"), str(static),
                                 LAYOUT, "last", str(table), str(gain))
    assert (tmp_path / "reading.rst").read_text() == text
    page = (tmp_path / "first_page.rst").read_text()
    assert page.startswith(static.read_text().rstrip()) and "{% raw %}" in page

    class Snakemake:
        config = {"name": "tiny", "dataset": {"name": "digits"}}

    html = publish_parts(jinja2.Template(page).render(snakemake=Snakemake), writer="html")["html_body"]
    assert "MCMI reproduction on <strong>tiny</strong>" in html
    assert "within noise" in html and "room for a better teacher to show" in html


def test_an_empty_gains_file_is_read_as_no_gain(tmp_path):
    table, gain = tmp_path / "main.csv", tmp_path / "main_gains.csv"
    main_table().to_csv(table, index=False)
    gain.write_text("\n")
    text = reading.write_reading(str(tmp_path / "r.rst"), str(tmp_path / "p.rst"),
                                 str(ROOT / "workflow" / "report" / "workflow.rst"), LAYOUT, "last", str(table),
                                 str(gain))
    assert "no pooled seed-paired gain" in text and "headroom is not tested here" in text


# ----------------------------------------------------------------------------------------------- choices
def weights_table(evaluated_on=None):
    rows = []
    for method, key, accs in (("kd", "alpha", {0.1: 90.0, 1.0: 92.0}), ("at", "beta", {0.1: 91.0, 1.0: 91.0})):
        for m, acc in accs.items():
            rows.append({"pair": PAIR, "method": method, "multiple": m, "weight_key": key, "weight": m * 2,
                         "mean": acc, "std": 0.1, "n": 2, "best": False})
    rows.append({"pair": PAIR, "method": "ce", "multiple": math.nan, "weight_key": None, "weight": math.nan,
                 "mean": 85.0, "std": 0.1, "n": 2, "best": False})
    frame = pd.DataFrame(rows)
    return frame.assign(evaluated_on=evaluated_on) if evaluated_on else frame


def test_the_weight_choice_is_method_weights_choose_and_says_its_split(tmp_path):
    from mcmikd.experiments.method_weights import choose

    numbers = weights_table()
    choice = choices.weights_choice(numbers, "test")
    assert choice["methods"] == choose(numbers)
    assert choice["methods"]["kd"]["multiple"] == 1.0 and choice["methods"]["at"]["multiple"] == 1.0  # tie → × 1
    assert choices.weights_choice(weights_table("validation"), "test")["evaluated_on"] == "validation"
    numbers.to_csv(tmp_path / "w.csv", index=False)
    choices.write_weights_choice(str(tmp_path / "w.csv"), str(tmp_path / "w.yaml"), str(tmp_path / "w.md"), "test",
                                 "last")
    record = yaml.safe_load((tmp_path / "w.yaml").read_text())
    assert record["evaluated_on"] == "test" and record["methods"]["kd"]["value"] == 2.0
    md = (tmp_path / "w.md").read_text()
    assert "TEST data" in md and "| kd | alpha | × 1 | 2.0 |" in md


def test_the_weight_choice_of_the_committed_tuning_run_matches_choose_weights(tmp_path):
    """The DAG's choice and `mcmikd choose-weights` (write_choice) agree on the committed digits tuning table."""
    from mcmikd.experiments.method_weights import write_choice

    table = ROOT / "docs" / "results" / "tune" / "method_weights.csv"
    choice = choices.write_weights_choice(str(table), str(tmp_path / "dag.yaml"), str(tmp_path / "dag.md"), "test",
                                          "best")
    by_hand = write_choice(str(table), str(tmp_path / "hand.yaml"))
    assert yaml.safe_load((tmp_path / "dag.yaml").read_text())["methods"] == by_hand
    assert choice["evaluated_on"] == "validation"  # the table's own column says so


def sweep_rows(pair, acc, cmi, raised, over, control_cmi=0.10):
    """`LambdaSweep.rows`-shaped rows of one pair: MLL (reference), the control, then λ 0.25 and 0.5."""
    rows = [{"pair": pair, "lambda": None, "teacher_acc": 95.0, "teacher_cmi": 0.09},
            {"pair": pair, "lambda": None, "teacher_acc": 95.0, "teacher_cmi": control_cmi}]
    for lam, a, c, r, o in zip((0.25, 0.5), acc, cmi, raised, over):
        rows.append({"pair": pair, "lambda": lam, "teacher_acc": a, "teacher_cmi": c, "seeds_checked": 3,
                     "cmi_raised": r, "over_cliff": o})
    return rows


def test_the_lambda_choice_needs_every_pair_to_pass():
    one = sweep_rows("a → b", acc=(94.5, 94.8), cmi=(0.12, 0.2), raised=(3, 3), over=(0, 0))
    other = sweep_rows("c → d", acc=(94.5, 90.0), cmi=(0.12, 0.3), raised=(3, 3), over=(0, 3))
    both = choices.lambda_choice({"a → b": one, "c → d": other}, 1.0)
    assert both["passing"] == [0.25] and both["chosen"] == 0.25  # 0.5 is too far below MLL on the second pair
    alone = choices.lambda_choice({"a → b": one}, 1.0)
    assert alone["chosen"] == 0.5  # both pass and are safe: the larger CMI gain over the control
    assert choices.lambda_choice({}, 1.0)["chosen"] is None
    md = choices.lambda_markdown(both, "runs.csv")
    assert "**Chosen: λ = 0.25**" in md and "TEST data" in md and "| c → d | 0.5 | no |" in md


def test_the_lambda_choice_of_the_committed_recipe_run_is_the_recipe_commands(tmp_path):
    """One pair, one run: the DAG's choice is what `mcmikd recipe` prints for the same runs table (0.35, on
    validation data), and its YAML is plain data."""
    from mcmikd.config import load_grid, schema_path
    from mcmikd.experiments.lambda_sweep import LambdaSweep

    grid = load_grid(yaml.safe_load((ROOT / "config" / "digits-recipe.yaml").read_text()), schema_path())
    [kind] = [k for k in grid.experiments if grid.experiments[k].__class__ is LambdaSweep]
    layout = grid.experiments[kind].layout()
    runs = ROOT / "docs" / "results" / "recipe" / "runs_lambda_sweep.csv"
    choice = choices.write_lambda_choice(str(runs), layout, "last", str(tmp_path / "l.yaml"), str(tmp_path / "l.md"))
    assert choice["chosen"] == 0.35 and choice["passing"] == [0.35] and choice["safe"] == []
    record = yaml.safe_load((tmp_path / "l.yaml").read_text())
    assert record["chosen"] == 0.35 and record["evaluated_on"] == "validation" and record["accuracy_margin"] == 1.0
    assert "held out from training" in (tmp_path / "l.md").read_text()


def test_plain_turns_numpy_and_nan_into_yaml_data():
    value = choices.plain({"a": np.float64(1.5), "b": [np.int64(2), float("nan")], "c": np.bool_(True)})
    assert value == {"a": 1.5, "b": [2, None], "c": True}
    assert yaml.safe_load(yaml.safe_dump(value)) == value


def test_the_reading_states_the_choices_and_their_split():
    text = reading.reading(None, None, None, "last", weights={"evaluated_on": "validation",
                                                              "methods": {"kd": {"multiple": 1.0}}},
                           lam={"evaluated_on": None, "chosen": None})
    assert "Method weights chosen on held-out validation data" in text and "kd × 1" in text
    assert "no λ passes for every pair" in text and "not a held-out choice" in text


@pytest.mark.parametrize("kind", ["method_weights", "lambda_sweep", "main"])
def test_the_choice_rules_name_the_kinds_through_their_classes(kind):
    """rules/choices.smk takes the kinds' names from their classes (tests/test_registries.py)."""
    text = (ROOT / "rules" / "choices.smk").read_text()
    assert f'"{kind}"' not in text and f"'{kind}'" not in text
