"""The teacher-recipes experiment kind (issue 18, item 3): its grid (one fine-tuned teacher per recipe, per-epoch
centroids in a folder of their own), its config errors, and the acceptance rule on hand numbers."""

import json
import math

import pandas as pd
import pytest

from mcmikd.errors import ConfigError

RECIPES = {"pairs": [{"teacher": "resnet20", "student": "resnet8"}], "seeds": [0], "temperatures": [4],
           "recipes": [{"name": "frozen", "hp": {"lambda": 0.35, "centroids": "eval"}},
                       {"name": "per_epoch", "hp": {"lambda": 0.35, "centroids": "per_epoch"}},
                       {"name": "paper", "hp": {"lambda": 0.25}}]}


def with_recipes(**changes):
    def mutate(c):
        c["experiments"]["recipes"] = {**json.loads(json.dumps(RECIPES)), **changes}
    return mutate


def test_each_recipe_is_its_own_teacher_fine_tuned_from_the_one_mll_teacher(load):
    grid = load(with_recipes())
    layout = grid.experiments["recipes"].layout()
    assert layout["variants"]["resnet20"] == {"references": {"mll": "mll", "ce_finetune": "ce_finetune"},
                                              "sweep": ["mcmi-0.35", "mcmi-0.35-per_epoch", "mcmi-0.25"]}
    assert grid.variants[("resnet20", "mcmi-0.35-per_epoch")][1]["centroids"] == "per_epoch"
    assert grid.variants[("resnet20", "mcmi-0.35")][1]["centroids"] == "eval"  # the folder it always had
    assert all(grid.start_variant("resnet20", v) == "mll" for v in layout["variants"]["resnet20"]["sweep"])
    assert layout["rule_temperatures"] == [1.0, 4.0] and layout["accuracy_margin"] == 1.0
    assert layout["sd_multiple"] == 2.0
    assert 4.0 in grid.experiments["recipes"].cmi_temperatures()


@pytest.mark.parametrize("changes, expected", [
    ({"recipes": [{"name": "a", "hp": {"lambda": 0.3}}, {"name": "a", "hp": {"lambda": 0.4}}]}, "repeat"),
    ({"recipes": [{"name": "a", "hp": {"ema_decay": 0.9}}]}, r"\['ema_decay'\] cannot vary between recipes"),
    ({"recipes": [{"name": "a", "hp": {"lambda": -1}}]}, "is not a positive number"),
    ({"recipes": [{"name": "a", "hp": {"centroids": "often"}}]}, "'often' is not allowed"),
    ({"objective": "mll"}, "trains from scratch"),
])
def test_bad_recipe_blocks_are_one_line_errors(load, changes, expected):
    with pytest.raises(ConfigError, match=expected):
        load(with_recipes(**changes))


LAYOUT = {"pairs": [["resnet20", "resnet8"]], "references": ["mll", "ce_finetune"], "swept": "mcmi",
          "recipes": [{"name": "good", "hp": {"lambda": 0.3}}, {"name": "cliff", "hp": {"lambda": 0.5}},
                      {"name": "noise", "hp": {"lambda": 0.1}}],
          "variants": {"resnet20": {"references": {"mll": "mll", "ce_finetune": "ce_finetune"},
                                    "sweep": ["mcmi-0.3", "mcmi-0.5", "mcmi-0.1"]}},
          "accuracy_margin": 1.0, "sd_multiple": 2.0, "rule_temperatures": [1.0, 4.0]}


def hand_runs() -> pd.DataFrame:
    """Three teacher seeds. MLL CMI at T=1: 0.10, 0.11, 0.12 (std 0.01); control: 0.10, 0.10, 0.13 (std ≈ 0.0173);
    at T=4 the same × 10. 'good' leads both by 0.05 (> 2 std) on every seed and T, accuracy −0.5;
    'cliff' leads but seed 2 falls 1.5 points; 'noise' leads by only 0.02 at T=1."""
    rows = []
    mll_cmi, ctl_cmi = [0.10, 0.11, 0.12], [0.10, 0.10, 0.13]
    for s in range(3):
        def teacher(variant, objective, acc, cmi1):  # called only in this iteration, with this seed s
            return {"role": "teacher", "teacher_arch": "resnet20", "teacher_variant": variant,
                    "teacher_objective": objective, "teacher_seed": s, "status": "ok", "model_acc": acc,  # noqa: B023
                    "cmi_T1": cmi1, "cmi_T4": 10 * cmi1}
        top = max(mll_cmi[s], ctl_cmi[s])
        rows += [teacher("mll", "mll", 90.0, mll_cmi[s]), teacher("ce_finetune", "ce_finetune", 90.2, ctl_cmi[s]),
                 teacher("mcmi-0.3", "mcmi", 89.5, top + 0.05),
                 teacher("mcmi-0.5", "mcmi", 88.5 if s == 2 else 89.8, top + 0.05),
                 teacher("mcmi-0.1", "mcmi", 90.0, top + 0.02)]
    return pd.DataFrame(rows)


def test_the_acceptance_rule_on_hand_numbers():
    from mcmikd.experiments.recipes import Recipes

    seeds = Recipes.acceptance(hand_runs(), LAYOUT)
    by = {(r["recipe"], r["teacher_seed"]): r for r in seeds}
    assert len(seeds) == 9
    assert all(by[("good", s)]["accepted"] for s in range(3))
    assert by[("good", 0)]["margin_T1_vs_reference"] == pytest.approx(0.02)  # 2 × std(0.10, 0.11, 0.12)
    assert by[("good", 0)]["margin_T4_vs_control"] == pytest.approx(2 * 10 * pd.Series([0.10, 0.10, 0.13]).std())
    assert by[("good", 1)]["acc_vs_mll"] == pytest.approx(-0.5)
    assert [by[("cliff", s)]["accuracy_ok"] for s in range(3)] == [True, True, False]  # 1.5 points below: over
    assert by[("cliff", 0)]["cmi_ok"] and not by[("cliff", 2)]["accepted"]
    assert not any(by[("noise", s)]["cmi_ok"] for s in range(3))  # 0.02 is not above 2 std of the control (0.035)
    assert all(by[("noise", s)]["accuracy_ok"] for s in range(3))


def test_the_recipes_table_counts_accepted_seeds_and_drift():
    from mcmikd.experiments.recipes import Recipes

    student = {"role": "student", "teacher_arch": "resnet20", "student": "resnet8", "method": "kd", "reason": None,
               "omitted": "", "setting": "full", "seed": 0, "status": "ok"}
    kd = [{**student, "teacher_objective": o, "teacher_variant": v, "last_acc": a, "best_acc": a}
          for o, v, a in (("mll", "mll", 80.0), ("ce_finetune", "ce_finetune", 80.5), ("mcmi", "mcmi-0.3", 81.0),
                          ("mcmi", "mcmi-0.5", 79.0), ("mcmi", "mcmi-0.1", 80.0))]
    runs = pd.concat([hand_runs(), pd.DataFrame(kd)], ignore_index=True)
    layout = {**LAYOUT, "cliff": 1.0, "labels": {"mll": "MLL", "ce_finetune": "CE-FT", "mcmi": "MCMI"},
              "objectives": ["mll", "mcmi", "ce_finetune"], "must_raise": {"mcmi": ["mll", "ce_finetune"]},
              "lambdas": ["good", "cliff", "noise"]}
    numbers, display = Recipes.table(runs, layout, "last")
    assert display["Recipe"].tolist() == ["good (λ=0.3)", "cliff (λ=0.5)", "noise (λ=0.1)"]
    assert display["Accepted"].tolist() == ["yes", "no", "no"]
    assert display["Over the cliff (> 1 pt)"].tolist() == ["0 of 3", "1 of 3", "0 of 3"]
    assert display["CMI rule (seeds)"].tolist() == ["3 of 3", "3 of 3", "0 of 3"]
    assert display["KD student"].tolist() == ["81.00 (n = 1)", "79.00 (n = 1)", "80.00 (n = 1)"]
    recipe_rows = numbers[numbers["part"] == "recipe"]
    assert recipe_rows["over_the_cliff"].tolist() == [0, 1, 0] and not math.isnan(recipe_rows["teacher_cmi"].iloc[0])
