"""Held-out validation split, method-weight selection (the `w…` settings and the chooser), and the "method not
working at this setting" mark: small synthetic inputs, no training."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


# ----------------------------------------------------------------------- validation split
def _data(n_per_class=(10, 20, 30)):
    from mcmikd.data import DatasetTensors

    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(labels), dtype=torch.int64).view(-1, 1, 1, 1).expand(-1, 1, 2, 2) % 200
    images = (images + 1).to(torch.uint8)  # pixel value = 1 + position: which training image it is
    test = torch.zeros((7, 1, 2, 2), dtype=torch.uint8) + 255  # test images are all 255, never a training image
    return DatasetTensors("toy", images.contiguous(), labels, test, torch.zeros(7, dtype=torch.int64), (0.5,), (0.2,),
                          ["a", "b", "c"], False, {"test_indices": list(range(7))})


def test_the_validation_split_is_stratified_disjoint_seeded_and_drops_the_test_set():
    from mcmikd.datasets import hold_out_validation

    data = _data()
    out = hold_out_validation(data, 0.2, seed=0)
    val, rest = out.info["validation_positions"], out.info["train_positions"]
    assert not set(val) & set(rest) and sorted(val + rest) == list(range(len(data.train_labels)))
    assert torch.bincount(out.test_labels).tolist() == [2, 4, 6]  # 20 % of every class
    assert (torch.equal(out.test_images, data.train_images[val])
            and torch.equal(out.train_images, data.train_images[rest]))
    assert not (out.test_images == 255).any() and not (out.train_images == 255).any()  # the test set is gone
    assert out.evaluated_on == "validation" and "test_indices" not in out.info
    assert out.evaluation_record() == {"evaluated_on": "validation"} and data.evaluation_record() == {}
    assert hold_out_validation(data, 0.2, seed=0).info["validation_positions"] == val
    assert hold_out_validation(data, 0.2, seed=1).info["validation_positions"] != val
    with pytest.raises(ValueError):
        hold_out_validation(data, 1.0)


def test_load_dataset_holds_out_validation_for_digits_and_the_key_reaches_data_params_only_when_set():
    from mcmikd.datasets import get_dataset, load_dataset

    plain = load_dataset("digits", image_size=8, test_fraction=0.25, split_seed=0)
    held = load_dataset("digits", image_size=8, test_fraction=0.25, split_seed=0,
                        validation={"fraction": 0.2, "seed": 0})
    assert len(held.train_labels) + len(held.test_labels) == len(plain.train_labels)
    train_ids = plain.info["train_indices"]  # positions in sklearn's order: validation images are training images
    assert set(train_ids[p] for p in held.info["validation_positions"]) <= set(train_ids)
    assert torch.equal(held.test_images, plain.train_images[held.info["validation_positions"]])
    spec = get_dataset("digits")
    assert "validation" not in spec.params({"name": "digits", "image_size": 8, "validation": None})
    assert spec.params({"name": "digits", "validation": {"fraction": 0.2}})["validation"] == {"fraction": 0.2}


# ----------------------------------------------------------------------- w… settings
def _tiny_with_weights(**tables):
    from mcmikd.config import load_grid

    config = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    config["methods"]["dkd"] = {"warmup": 1}
    config["experiments"] = {"method_weights": {"pairs": [{"teacher": "resnet56", "student": "resnet20"}],
                                                "methods": ["kd", "at", "dkd"], "multiples": [0.1, 1, 10]}}
    config["dataset"]["validation"] = {"fraction": 0.2, "seed": 0}
    config["tables"].update(tables)
    return load_grid(copy.deepcopy(config), SCHEMA)


def test_weight_settings_scale_each_methods_declared_weight():
    from mcmikd.distill.weights import weight_key

    assert (weight_key("ce"), weight_key("kd"), weight_key("at"), weight_key("dkd")) == (None, "alpha", "beta", "beta")
    grid = _tiny_with_weights()
    hp = {(r.method, r.setting): grid.student_params(r)["hp"] for r in grid.runs["method_weights"]}
    # (params leave out what equals the method's class default: KD's γ 0.1, α 0.9 and T 4)
    assert hp[("kd", "w10")] == {"alpha": 9.0}
    assert hp[("kd", "full")] == {}  # × 1 is the ordinary run
    assert hp[("at", "w0.1")] == {"beta": 100.0}
    assert hp[("dkd", "w10")] == {"warmup": 1, "beta": 20.0}  # the official β of resnet56 → resnet20 is 2
    assert hp[("ce", "w10")] == {}
    assert {r.t_variant for r in grid.runs["method_weights"] if r.method != "ce"} == {"mll"}  # MLL teacher only
    layout = grid.experiments["method_weights"].layout()
    assert layout["evaluated_on"] == "validation" and "not_working_margin" not in layout


# ----------------------------------------------------------------------- the chooser
def test_the_chooser_picks_the_best_multiple_and_breaks_ties_towards_the_configured_weight(tmp_path):
    from mcmikd.experiments.method_weights import choose, choose_multiple, write_choice

    assert choose_multiple({0.1: 90.0, 1.0: 92.0, 10.0: 95.0}) == 10.0
    assert choose_multiple({0.1: 95.0, 1.0: 95.0, 10.0: 80.0}) == 1.0  # tie -> × 1
    assert choose_multiple({0.01: 95.0, 0.1: 95.0, 1.0: 80.0}) == 0.1  # tie without × 1 -> nearest to 1
    assert choose_multiple({0.1: float("nan")}) is None
    rows = [{"pair": p, "method": "sp", "multiple": m, "weight_key": "beta", "weight": 3000 * m, "mean": acc}
            for p, accs in (("a → b", (50.0, 90.0, 60.0)), ("c → d", (52.0, 80.0, 70.0)))
            for m, acc in zip((1.0, 0.01, 10.0), accs)]
    rows.append({"pair": "a → b", "method": "ce", "multiple": float("nan"), "weight_key": None, "weight": None,
                 "mean": 97.0})
    chosen = choose(pd.DataFrame(rows))
    assert list(chosen) == ["sp"] and chosen["sp"]["multiple"] == 0.01 and chosen["sp"]["value"] == 30.0
    assert chosen["sp"]["mean_acc"] == {"0.01": 85.0, "1": 51.0, "10": 65.0}
    table = tmp_path / "method_weights.csv"
    pd.DataFrame(rows).assign(evaluated_on="validation").to_csv(table, index=False)
    table.with_suffix(".md").write_text("| the table |\n")
    write_choice(str(table), str(tmp_path / "w.yaml"), str(tmp_path / "doc.md"), "snakemake ...")
    assert yaml.safe_load((tmp_path / "w.yaml").read_text())["methods"]["sp"]["multiple"] == 0.01
    doc = (tmp_path / "doc.md").read_text()
    assert "evaluated on: validation" in doc and "| sp | beta | × 0.01 | 30.0 |" in doc and "| the table |" in doc


# ----------------------------------------------------------------------- "not working" mark
LAYOUT = {"pairs": [["resnet32", "resnet8"]], "methods": ["ce", "kd", "sp"], "objectives": ["mll", "mcmi"],
          "labels": {"mll": "MLL", "mcmi": "MCMI"}, "colors": {}, "controls": {}, "must_raise": {}}


def _runs(ce=95.0, kd=(94.0, 96.0), sp=(60.0, 40.0)):
    rows = [{"role": "student", "method": "ce", "teacher_arch": "none", "student": "resnet8",
             "teacher_objective": "none", "best_acc": ce, "status": "ok", "reason": None}]
    for method, (mll, mcmi) in (("kd", kd), ("sp", sp)):
        for objective, acc in (("mll", mll), ("mcmi", mcmi)):
            rows.append({"role": "student", "method": method, "teacher_arch": "resnet32", "student": "resnet8",
                         "teacher_objective": objective, "best_acc": acc, "status": "ok", "reason": None})
    return pd.DataFrame(rows)


def test_a_cell_below_the_margin_is_marked_not_working_and_one_above_is_not():
    from mcmikd.aggregate import NOT_WORKING, to_markdown
    from mcmikd.experiments.main import Main

    numbers, display = Main.table(_runs(), {**LAYOUT, "not_working_margin": 5.0}, "best")
    col = display.set_index("Top-1 % (best epoch)")["resnet32 → resnet8"]
    assert col["SP"] == "60.00 (n = 1)" + NOT_WORKING  # 35 points below the CE student
    assert col["SP + MCMI teacher"] == "40.00 (n = 1)" + NOT_WORKING + " ([-20.00])"
    assert col["KD"] == "94.00 (n = 1)" and col["KD + MCMI teacher"] == "96.00 (n = 1) (+2.00)"  # 1 point below
    flags = numbers.set_index(["row", "teacher_objective"])["not_working"]
    assert flags[("sp", "mll")] == True and flags[("kd", "mll")] == False  # noqa: E712
    md = to_markdown(display)
    assert "‡ method not working at this setting" in md and "5 points" in md
    # off (null margin): no mark, no column, no footnote — the tables stay as they were
    numbers, display = Main.table(_runs(), LAYOUT, "best")
    assert "not_working" not in numbers and "‡" not in to_markdown(display)
    # no CE student: not checked, and the footnote says so
    runs = _runs()
    _, display = Main.table(runs[runs["method"] != "ce"], {**LAYOUT, "not_working_margin": 5.0}, "best")
    assert "‡" not in display.iloc[:, 1:].to_string() and "not checked" in " ".join(display.attrs["footnotes"])


def test_the_zeroshot_mark_compares_overall_accuracy_not_the_omitted_class_recall():
    import json

    from mcmikd.experiments.zeroshot import ZeroShot

    def row(method, objective, acc, recall):
        per = [acc] * 3
        per[1] = recall
        return {"role": "student", "method": method, "teacher_arch": "resnet32" if objective != "none" else "none",
                "student": "resnet8", "teacher_objective": objective, "best_acc": acc, "omitted": "1",
                "per_class_acc_best": json.dumps(per), "status": "ok", "reason": None}

    runs = pd.DataFrame([row("ce", "none", 66.0, 0.0), row("kd", "mll", 64.0, 5.0), row("kd", "mcmi", 65.0, 9.0)])
    layout = {**LAYOUT, "methods": ["ce", "kd"], "omitted": [[1]], "class_names": ["a", "b", "c"],
              "not_working_margin": 5.0}
    numbers, display = ZeroShot.table(runs, layout, "best")
    assert not numbers[numbers["method"] == "kd"]["not_working"].any()  # 2 points below CE overall: fine
    runs.loc[1, "best_acc"] = 50.0  # the MLL-teacher student fails; the MCMI-teacher one does not
    numbers, display = ZeroShot.table(runs, layout, "best")
    kd = numbers[numbers["method"] == "kd"].set_index("teacher_objective")
    assert kd.loc["mll", "not_working"] == True and kd.loc["mcmi", "not_working"] == False  # noqa: E712  each arm alike
    assert display["KD, Δ"].iloc[0] == "+4.00"  # one working side: the gain is a finding
    assert display["KD, MLL, all classes"].iloc[0].endswith("‡") and "‡" not in display["KD, MCMI, all classes"].iloc[0]
    runs.loc[2, "best_acc"] = 52.0  # both fail: the gain is not a finding
    numbers, display = ZeroShot.table(runs, layout, "best")
    assert numbers[numbers["method"] == "kd"]["not_working"].all()
    assert display["KD, Δ"].iloc[0] == "[+4.00]"


def test_the_heat_map_greys_and_hatches_a_not_working_cell(tmp_path):
    from mcmikd.experiments.main import delta_figure

    runs = tmp_path / "main.csv"
    frame = _runs()
    frame["omitted"], frame["setting"] = "", "full"
    frame.to_csv(runs, index=False)
    png = tmp_path / "main_delta.png"
    delta_figure([str(runs)], {**LAYOUT, "not_working_margin": 5.0}, "best", str(png), str(tmp_path / "d.pdf"))
    assert png.stat().st_size > 0
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    grey = ((abs(pixels[..., 0] - pixels[..., 1]) < 0.02) & (abs(pixels[..., 1] - pixels[..., 2]) < 0.02)
            & (pixels[..., 0] > 0.3) & (pixels[..., 0] < 0.8))
    assert grey.sum() > 500  # the hatched grey cell
