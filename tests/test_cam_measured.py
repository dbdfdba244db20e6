"""The CAM measurements (issue 18, item 2): the measurement job on real model files and boxes, and table `cam`
(seed-level intervals, differences paired by image) on hand-made records with known answers."""

import math

import pandas as pd
import pytest
import torch

LAYOUT = {"objectives": ["mll", "mcmi"], "labels": {"mll": "MLL", "mcmi": "MCMI"}, "colors": {},
          "methods": ["eigencam", "gradcam"], "archs": ["resnet8"], "box_threshold": 0.2, "area_threshold": 0.5}


def record(seed: int, loc: dict, context: dict) -> dict:
    """Four images; loc[(objective, method)]: which images are localized; context[objective]: per-image values."""
    metrics = {}
    for objective in ("mll", "mcmi"):
        metrics[objective] = {}
        for method in ("eigencam", "gradcam"):
            hits = loc[(objective, method)]
            metrics[objective][method] = {
                "iou": [0.6 if h else 0.1 for h in hits], "localized": hits, "pointing": [True] * 4,
                "context": context[objective], "area": [0.25] * 4, "entropy": [0.5] * 4,
                "localized@0.2": hits, "localized@0.5": [True, True, True, method == "eigencam"]}
    return {"arch": "resnet8", "teacher_seed": seed, "images": 4, "layer": "layer3", "box_threshold": 0.2,
            "area_threshold": 0.5, "correct": {"mll": [True] * 4, "mcmi": [True] * 4}, "metrics": metrics}


def hand_records():
    out = []
    for seed, extra in enumerate((0.0, 0.1, 0.2)):
        loc = {("mll", "eigencam"): [True, True, True, False], ("mll", "gradcam"): [True, False, False, False],
               ("mcmi", "eigencam"): [True, True, True, True], ("mcmi", "gradcam"): [True, True, False, False]}
        context = {"mll": [0.2, 0.2, 0.2, 0.2], "mcmi": [0.3 + extra] * 4}
        out.append(record(seed, loc, context))
    return out


def test_table_cam_on_hand_records():
    from mcmikd.cam_table import tables

    numbers, summary, diffs = tables(hand_records(), LAYOUT)
    row = summary[(summary["Teacher"] == "resnet8 MLL") & (summary["Map"] == "Eigen-CAM (centred)")].iloc[0]
    assert row["Loc. acc. (%)"] == "75.0 ± 0.0" and row["Seeds × images"] == "3 × 4"
    assert row["Context (mass outside box)"] == "0.200 ± 0.000"
    grad = summary[(summary["Teacher"] == "resnet8 MLL") & (summary["Map"] == "Grad-CAM")].iloc[0]
    assert grad["Context (mass outside box)"] == ""  # the context claim is about Eigen-CAM maps only
    eig_vs_grad = numbers[(numbers["part"] == "difference") & (numbers["objective"] == "mll")
                          & (numbers["metric"] == "localized") & (numbers["versus"] == "mll/gradcam")].iloc[0]
    assert eig_vs_grad["mean"] == pytest.approx(50.0) and eig_vs_grad["n_seeds"] == 3  # 3/4 − 1/4, every seed
    ctx = numbers[(numbers["part"] == "difference") & (numbers["objective"] == "mcmi")
                  & (numbers["metric"] == "context") & (numbers["versus"] == "mll/eigencam")].iloc[0]
    assert ctx["mean"] == pytest.approx(0.2) and ctx["std"] == pytest.approx(0.1)  # 0.1, 0.2, 0.3 over seeds
    from scipy.stats import t
    assert ctx["ci95"] == pytest.approx(t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    assert any("MCMI − MLL" in c for c in diffs["Comparison"])
    # MaxBoxAcc: each method at its own best threshold (0.5 here: 4 of 4 for Eigen-CAM, 3 of 4 for Grad-CAM)
    best = numbers[(numbers["part"] == "summary") & (numbers["metric"] == "maxbox") & (numbers["objective"] == "mll")]
    assert dict(zip(best["method"], best["mean"])) == {"eigencam": pytest.approx(100.0), "gradcam": pytest.approx(75.0)}


def test_a_truncated_record_is_refused(tmp_path):
    from mcmikd.cam_table import read_measures
    from mcmikd.errors import DataError
    from mcmikd.io import write_json

    bad = hand_records()[0]
    bad["metrics"]["mll"]["gradcam"]["iou"] = [0.5]
    write_json(tmp_path / "seed0.json", bad)
    with pytest.raises(DataError, match="holds 1 values for 4 images"):
        read_measures([str(tmp_path / "seed0.json")])


def test_the_measurement_job_scores_every_test_image_of_every_teacher(tmp_path, one_torch_thread):
    from mcmikd.cam_table import write_cam_table
    from mcmikd.data import DatasetTensors
    from mcmikd.io import read_json, torch_save
    from mcmikd.jobs.cam import run_cam_measure
    from mcmikd.models import create_model

    g = torch.Generator().manual_seed(0)
    n = 12
    images = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    boxes = []
    for k in range(n):  # a bright square per image: its box is the object box
        x, y = int(torch.randint(0, 20, (1,), generator=g)), int(torch.randint(0, 20, (1,), generator=g))
        images[k, 0, y:y + 10, x:x + 10] = 255
        boxes.append([x, y, x + 10, y + 10])
    labels = torch.arange(n) % 10
    data = DatasetTensors(name="squares", train_images=images, train_labels=labels, test_images=images,
                          test_labels=labels, mean=(0.1,), std=(0.3,), class_names=[str(c) for c in range(10)],
                          hflip=False, info={"test_boxes": boxes})
    data.to_file(tmp_path / "data.pt")
    models = {}
    for objective in ("mll", "mcmi"):
        torch.manual_seed(len(objective))
        model = create_model("resnet8", 10, 1)
        models[objective] = str(tmp_path / f"{objective}.pt")
        torch_save({"arch": "resnet8", "num_classes": 10, "in_channels": 1, "state_dict": model.state_dict(),
                    "objective": objective, "variant": objective, "hp": {}}, models[objective])
    params = {"arch": "resnet8", "teacher_seed": 0, "layer": "auto", "box_threshold": 0.2, "area_threshold": 0.5,
              "methods": ["eigencam", "eigencam_uncentered", "gradcam", "gradcampp"],
              "runtime": {"device": "cpu", "deterministic": True}}
    out = tmp_path / "seed0.json"
    run_cam_measure(str(tmp_path / "data.pt"), models, params, str(out), chunk=5)  # chunks of 5, 5, 2
    result = read_json(out)
    assert result["images"] == n and set(result["metrics"]) == {"mll", "mcmi"}
    for objective in ("mll", "mcmi"):
        assert len(result["correct"][objective]) == n
        for method in params["methods"]:
            scores = result["metrics"][objective][method]
            assert all(len(v) == n for v in scores.values())
            assert all(0 <= v <= 1 for v in scores["iou"]) and all(0 <= v <= 1 for v in scores["area"])
    write_cam_table([str(out)], {**LAYOUT, "methods": params["methods"]}, str(tmp_path / "cam.csv"),
                    str(tmp_path / "cam.md"), str(tmp_path / "cam.tex"))
    table = pd.read_csv(tmp_path / "cam.csv")
    assert set(table["method"]) == set(params["methods"]) and (table["images"] == n).all()
    assert "Grad-CAM++" in (tmp_path / "cam.md").read_text()


def test_measuring_on_a_dataset_without_boxes_is_refused_before_any_job(load):
    from mcmikd.errors import ConfigError

    def measure(c):
        c["experiments"]["cam"]["measure"] = True

    with pytest.raises(ConfigError, match=r"experiments.cam.measure': dataset 'digits' records no object boxes"):
        load(measure)
