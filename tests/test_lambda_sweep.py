"""The λ sweep experiment kind: its grid (one fine-tuned teacher per λ from the one MLL teacher, one KD student
each), its config errors, its table on hand numbers, its figure, and one end-to-end run on the tiny config."""

import json
import math

import pandas as pd
import pytest

from mcmikd.errors import ConfigError

SWEEP = {"pairs": [{"teacher": "resnet20", "student": "resnet8"}], "lambdas": [0.1, 0.35, 0.5], "seeds": [0]}


def with_sweep(**changes):
    def mutate(c):
        c["experiments"]["lambda_sweep"] = {**json.loads(json.dumps(SWEEP)), **changes}
    return mutate


def test_the_grid_plans_one_fine_tuned_teacher_and_one_kd_student_per_lambda(load):
    grid = load(with_sweep())
    variants = {v for v in grid.teachers["resnet20"] if v.startswith("mcmi-")}
    assert variants == {"mcmi-0.1", "mcmi-0.35", "mcmi-0.5"}
    for v in variants:
        assert grid.variants[("resnet20", v)][0] == "mcmi"
        assert grid.variants[("resnet20", v)][1]["lambda"] == float(v.split("-")[1])
        assert grid.start_variant("resnet20", v) == "mll"  # all fine-tuned from the one MLL teacher
        assert grid.teacher_params("resnet20", v, 0)["hp"]["lambda"] == float(v.split("-")[1])
    assert [v for v in grid.teachers["resnet20"] if v.startswith("mll")] == ["mll"]
    runs = grid.runs["lambda_sweep"]
    assert [(r.t_variant, r.method, r.setting, r.seed) for r in runs] == [
        ("mll", "kd", "full", 0), ("ce_finetune", "kd", "full", 0),
        ("mcmi-0.1", "kd", "full", 0), ("mcmi-0.35", "kd", "full", 0), ("mcmi-0.5", "kd", "full", 0)]
    # the λ the main experiment uses (teachers.hp.mcmi: 0.35) is the same teacher and the same KD student
    assert set(grid.runs["main"]) & set(runs) == {r for r in runs if r.t_variant != "mcmi-0.1" and r.t_variant
                                                  != "mcmi-0.5"}
    layout = grid.experiments["lambda_sweep"].layout()
    assert layout["variants"]["resnet20"] == {"references": {"mll": "mll", "ce_finetune": "ce_finetune"},
                                              "sweep": ["mcmi-0.1", "mcmi-0.35", "mcmi-0.5"]}
    assert layout["swept"] == "mcmi" and layout["key"] == "lambda" and layout["references"] == ["mll", "ce_finetune"]


def test_a_sweep_without_the_control_and_with_an_explicit_objective(load):
    grid = load(with_sweep(objectives=["mll"], objective="mcmi", key="lambda", lambdas=[0.35]))
    assert [r.t_variant for r in grid.runs["lambda_sweep"]] == ["mll", "mcmi-0.35"]
    assert grid.experiments["lambda_sweep"].layout()["labels"]["mcmi"] == "MCMI"


def test_an_override_of_a_non_path_key_is_refused(load):
    grid = load(with_sweep())
    with pytest.raises(ConfigError, match=r"\['ema_decay'\] cannot be overridden per teacher"):
        grid.teacher_variant("resnet20", "mcmi", None, {"ema_decay": 0.9})


@pytest.mark.parametrize("changes, expected", [
    ({"lambdas": []}, "config key 'experiments.lambda_sweep.lambdas': [] should be non-empty"),
    ({"lambdas": [0.1, 0]}, "config key 'experiments.lambda_sweep.lambdas[1]': 0 is less than or equal to"),
    ({"lambdas": [-0.25]}, "config key 'experiments.lambda_sweep.lambdas[0]': -0.25 is less than or equal to"),
    ({"objective": "mll"}, "config key 'experiments.lambda_sweep.objective': 'mll' trains from scratch"),
    ({"objective": "mcmj"}, "config key 'experiments.lambda_sweep.objective': unknown teacher objective 'mcmj'"),
    ({"key": "centroids"}, "config key 'experiments.lambda_sweep.key': 'centroids' takes no numbers of 'mcmi'"),
    ({"key": "ema_decay"}, "config key 'experiments.lambda_sweep.key': 'ema_decay' is not a path hyper-parameter"),
    ({"objectives": ["mcmi", "mll"]}, "config key 'experiments.lambda_sweep.objectives': the first objective"),
    ({"objectives": ["mcmi"]}, "config key 'experiments.lambda_sweep.objectives': the sweep needs a reference"),
])
def test_config_errors_are_one_line(load, changes, expected):
    with pytest.raises(ConfigError) as info:
        load(with_sweep(**changes))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(expected), str(info.value)


# --------------------------------------------------------------------------------------------- table and figure
LAYOUT = {"pairs": [["resnet20", "resnet8"]], "methods": ["kd"], "objectives": ["mll", "mcmi", "ce_finetune"],
          "labels": {"mll": "MLL", "mcmi": "MCMI", "ce_finetune": "CE-FT"},
          "colors": {"mll": "#0173B2", "mcmi": "#DE8F05", "ce_finetune": "#029E73"},
          "swept": "mcmi", "key": "lambda", "lambdas": [0.1, 0.5], "references": ["mll", "ce_finetune"],
          "must_raise": {"mcmi": ["mll", "ce_finetune"]}, "cliff": 1.0,
          "variants": {"resnet20": {"references": {"mll": "mll", "ce_finetune": "ce_finetune"},
                                    "sweep": ["mcmi-0.1", "mcmi-0.5"]}}}


def synthetic_runs() -> pd.DataFrame:
    """Hand numbers: MLL 70/72 → students 60, 62; CE-FT → 61; mcmi-0.1 → 63, 65; mcmi-0.5 collapsed."""
    teacher = {"role": "teacher", "teacher_arch": "resnet20", "student": None, "method": None, "reason": None,
               "omitted": ""}
    student = {"role": "student", "teacher_arch": "resnet20", "student": "resnet8", "method": "kd", "reason": None,
               "omitted": "", "setting": "full"}
    rows = [
        {**teacher, "teacher_objective": "mll", "teacher_variant": "mll", "status": "ok", "model_acc": 70.0,
         "cmi_T1": 0.12345},
        {**teacher, "teacher_objective": "ce_finetune", "teacher_variant": "ce_finetune", "status": "ok",
         "model_acc": 70.5, "cmi_T1": 0.1},
        {**teacher, "teacher_objective": "mcmi", "teacher_variant": "mcmi-0.1", "status": "ok", "model_acc": 71.0,
         "cmi_T1": 0.5},
        {**teacher, "teacher_objective": "mcmi", "teacher_variant": "mcmi-0.5", "status": "collapsed",
         "model_acc": 10.0, "cmi_T1": 0.9, "reason": "accuracy fell"},
        # a teacher of another architecture with the same variant must not be picked up
        {**teacher, "teacher_arch": "resnet56", "teacher_objective": "mcmi", "teacher_variant": "mcmi-0.1",
         "status": "ok", "model_acc": 99.0, "cmi_T1": 9.0},
    ]
    for variant, objective, accs in (("mll", "mll", [60.0, 62.0]), ("ce_finetune", "ce_finetune", [61.0, 61.0]),
                                     ("mcmi-0.1", "mcmi", [63.0, 65.0])):
        rows += [{**student, "teacher_objective": objective, "teacher_variant": variant, "seed": s, "status": "ok",
                  "last_acc": a, "best_acc": a + 1} for s, a in enumerate(accs)]
    rows += [{**student, "teacher_objective": "mcmi", "teacher_variant": "mcmi-0.5", "seed": s, "status": "skipped",
              "reason": "collapsed teacher"} for s in range(2)]
    return pd.DataFrame(rows)


def test_the_table_on_hand_numbers():
    from mcmikd.experiments.lambda_sweep import LambdaSweep

    numbers, display = LambdaSweep.table(synthetic_runs(), LAYOUT, "last")
    assert list(display.columns) == ["Pair", "Teacher", "λ", "Teacher acc.", "Teacher CMI", "CMI raised (seeds)",
                                     "Over the cliff (seeds, > 1 pt)", "KD student", "Δ over MLL"]
    assert display.values.tolist() == [
        ["resnet20 → resnet8", "MLL (reference)", "–", "70.00 (n = 1)", "0.1235 (n = 1)", "", "", "61.00 ± 1.41", ""],
        ["resnet20 → resnet8", "CE-FT", "–", "70.50 (n = 1)", "0.1000 (n = 1)", "", "", "61.00 ± 0.00", "+0.00"],
        ["resnet20 → resnet8", "MCMI", "0.1", "71.00 (n = 1)", "0.5000 (n = 1)", "1 of 1", "0 of 1", "64.00 ± 1.41",
         "+3.00"],
        ["resnet20 → resnet8", "MCMI", "0.5", "10.00 (n = 1) (collapsed)", "0.9000 (n = 1)", "1 of 1", "1 of 1",
         "collapsed teacher", "–"],
    ]
    assert numbers["teacher_variant"].tolist() == ["mll", "ce_finetune", "mcmi-0.1", "mcmi-0.5"]
    assert numbers["lambda"].iloc[2:].tolist() == [0.1, 0.5] and numbers["lambda"].iloc[:2].isna().all()
    assert numbers["delta"].iloc[2] == pytest.approx(3.0) and math.isnan(numbers["delta"].iloc[3])
    assert numbers["n"].tolist() == [2, 2, 2, 0] and numbers["collapsed"].tolist() == [False, False, False, True]
    _, best = LambdaSweep.table(synthetic_runs(), LAYOUT, "best")
    assert best["KD student"].iloc[2] == "65.00 ± 1.41"


def test_the_recipe_rule_prefers_a_lambda_that_passes_on_every_seed_of_every_run():
    """Two runs of one sweep (e.g. two machines): a λ passes a run when its CMI is raised on every teacher seed and
    its mean accuracy is within 1 point of MLL's; the rule takes a λ that passes in both, the safe one (no seed over
    the cliff) first, then the larger CMI gain over the control."""
    from mcmikd.experiments.lambda_sweep import choose

    def rows(check):  # check: {λ: (raised of 3, over the cliff of 3, accuracy, CMI)}
        out = [{"lambda": None, "pair": "a → b", "teacher_acc": 99.0, "teacher_cmi": 0.01},
               {"lambda": None, "pair": "a → b", "teacher_acc": 99.0, "teacher_cmi": 0.008}]
        return out + [{"lambda": lam, "pair": "a → b", "seeds_checked": 3, "cmi_raised": r, "over_cliff": o,
                       "teacher_acc": acc, "teacher_cmi": cmi} for lam, (r, o, acc, cmi) in check.items()]

    one = rows({0.3: (3, 0, 98.8, 0.012), 0.35: (3, 1, 98.5, 0.02), 0.4: (3, 2, 97.0, 0.05)})
    two = rows({0.3: (3, 0, 98.9, 0.011), 0.35: (3, 0, 98.6, 0.015), 0.4: (3, 1, 98.2, 0.04)})
    result = choose({"here": one, "there": two})
    assert result["passing"] == [0.3, 0.35] and result["safe"] == [0.3] and result["chosen"] == 0.3
    two[2]["cmi_raised"] = 2  # 0.3 fails one seed on the second machine: the passing one on the cliff is chosen
    result = choose({"here": one, "there": two})
    assert result["passing"] == [0.35] and result["safe"] == [] and result["chosen"] == 0.35
    assert choose({"here": one, "there": rows({0.35: (2, 0, 99.0, 0.02)})})["chosen"] is None


def test_the_recipe_rule_compares_each_pair_with_its_own_references():
    """A run sweeping two pairs: each λ is held against the MLL teacher and control of its own pair (a pair whose
    teachers are 10 points weaker still passes within 1 point of its own MLL teacher)."""
    from mcmikd.experiments.lambda_sweep import choose

    def pair(name, acc, cmi):
        return [{"lambda": None, "pair": name, "teacher_acc": acc, "teacher_cmi": cmi},
                {"lambda": None, "pair": name, "teacher_acc": acc, "teacher_cmi": cmi - 0.002},
                {"lambda": 0.3, "pair": name, "seeds_checked": 3, "cmi_raised": 3, "over_cliff": 0,
                 "teacher_acc": acc - 0.5, "teacher_cmi": cmi + 0.001}]

    result = choose({"run": pair("a → b", 99.0, 0.01) + pair("c → d", 89.0, 0.5)})
    assert result["chosen"] == 0.3
    assert [round(r["acc_vs_reference"], 6) for r in result["rows"]] == [-0.5, -0.5]
    assert [round(r["cmi_gain"], 6) for r in result["rows"]] == [0.003, 0.003]


def test_the_figure_renders(tmp_path):
    from mcmikd.experiments.lambda_sweep import figure

    runs = tmp_path / "runs.csv"
    synthetic_runs().to_csv(runs, index=False)
    png, pdf = tmp_path / "f.png", tmp_path / "f.pdf"
    figure([str(runs)], LAYOUT, "last", str(png), str(pdf))
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    figure([str(empty)], LAYOUT, "last", str(png), str(pdf))  # no runs at all: notes, not a failure
    assert png.stat().st_size > 0


# --------------------------------------------------------------------------------------------- end to end


# End to end, the kind runs on the tiny config in tests/test_extensions.py (one run for every extension).
