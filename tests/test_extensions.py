"""The worked examples of a new teacher objective and a new experiment kind in docs/extending.md, taken from that page
itself, added to a private copy of the workflow (one file and one registry line each) and run on the tiny config."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from test_workflow import Workspace, copy_workflow, snakemake, write_config

pytestmark = pytest.mark.slow


def readme_blocks() -> list[tuple[str, str]]:
    """(first comment line, code) of every python block in docs/extending.md that starts with a path comment."""
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n# ([^\n]+)\n(.*?)```", text, flags=re.S)
    return [(head, code) for head, code in blocks if "src/mcmikd/" in head]


def apply_readme_examples(repo) -> list[str]:
    """Write docs/extending.md's new files and registry lines into `repo`; returns the files touched."""
    touched = []
    for head, code in readme_blocks():
        if head.startswith("one line in "):
            path = repo / head.removeprefix("one line in ")
            text = path.read_text()
            start = text.index(": dict[str, str] = {")
            end = text.index("\n}\n", start)
            path.write_text(text[:end + 1] + code.rstrip("\n") + "\n" + text[end + 1:])
        else:
            path = repo / head
            assert not path.exists(), f"{head} should be a new file"
            path.write_text(code)
        touched.append(head)
    return touched


def test_the_readme_examples_are_one_file_and_one_registry_line_each(tmp_path):
    touched = apply_readme_examples(copy_workflow(tmp_path / "repo"))
    assert touched == ["src/mcmikd/teachers/label_smoothing.py", "one line in src/mcmikd/teachers/__init__.py",
                       "src/mcmikd/experiments/kd_weight.py", "one line in src/mcmikd/experiments/__init__.py"]


def test_a_new_teacher_objective_and_experiment_kind_run_end_to_end(tmp_path):
    ws = Workspace(work=tmp_path / "work", repo=copy_workflow(tmp_path / "repo"))
    ws.work.mkdir()
    apply_readme_examples(ws.repo)

    def mutate(c):
        c["teachers"]["objectives"] = ["mll", "mcmi", "label_smoothing"]
        c["teachers"]["hp"]["label_smoothing"] = {"smoothing": 0.2}
        c["teachers"]["seeds"] = [0]  # one teacher seed: the tiny run's second one is covered by test_workflow
        c["students"]["seeds"] = [0]
        exps = c["experiments"]
        exps["main"]["methods"] = ["kd"]
        for name in ("fewshot", "zeroshot", "temperature", "cam"):
            exps[name]["enabled"] = False
        exps["kd_weight"] = {"pair": {"teacher": "resnet8", "student": "resnet8"}, "alphas": [0.5],
                             "objectives": ["mll", "label_smoothing"]}
        # the built-in λ sweep kind (issue 9) rides along: one more MCMI teacher, fine-tuned from the same MLL one
        exps["lambda_sweep"] = {"pairs": [{"teacher": "resnet8", "student": "resnet8"}], "lambdas": [0.25, 0.5],
                                "objectives": ["mll", "mcmi"]}
        # and the other built-in kinds of issue 9: Fig. 2 (an MLL teacher stopped after epoch 1 of 2) and the
        # method-weight choice, on a held-out 20 % of the training split (the test set is not loaded)
        exps["early_stopped"] = {"pairs": [{"teacher": "resnet8", "student": "resnet8"}], "epochs": [1]}
        exps["method_weights"] = {"pairs": [{"teacher": "resnet8", "student": "resnet8"}], "methods": ["at"],
                                  "multiples": [0.1, 1]}
        c["dataset"]["validation"] = {"fraction": 0.2, "seed": 0}
        c["tables"]["not_working_margin"] = 5
        c["teachers"]["hp"]["mcmi"]["centroids"] = "per_epoch"  # a centroid variant through the whole workflow
        c["reference"] = {"experiments": {"main": [{"pair": "resnet8 → resnet8", "row": "kd",
                                                    "teacher_objective": "mll", "value": 12.5,
                                                    "source": "a made-up paper number"}]},
                          "differences": ["validation accuracy, not test accuracy"]}

    write_config(ws, mutate)
    snakemake(ws)
    res = ws.work / "results" / "tiny"
    assert (res / "teachers" / "resnet8" / "label_smoothing-0.2" / "seed0" / "metrics.json").exists()
    main = (res / "tables" / "main.md").read_text()
    assert "| Teacher acc. (LS) |" in main and "| KD + LS teacher |" in main
    # the paper's number beside ours, and the run setting that differs from the paper's
    kd = pd.read_csv(res / "tables" / "main.csv").query("row == 'kd' and teacher_objective == 'mll'").iloc[0]
    assert kd["paper"] == 12.5 and kd["ours_minus_paper"] == pytest.approx(kd["mean"] - 12.5)
    assert "a made-up paper number" in main and "* Differs from the paper: validation accuracy" in main
    # a centroid variant has a folder of its own (mcmi-<λ>-<centroids>), beside the frozen-centroid teacher
    mcmi = json.loads((res / "teachers" / "resnet8" / "mcmi-0.25-per_epoch" / "seed0" / "metrics.json").read_text())
    assert mcmi["provenance"]["config"]["hp"]["centroids"] == "per_epoch"
    kd_weight = pd.read_csv(res / "tables" / "kd_weight.csv")
    assert set(kd_weight["teacher_objective"]) == {"mll", "label_smoothing"} and set(kd_weight["alpha"]) == {0.5}
    assert (kd_weight["n"] == 1).all()
    assert "| α | KD, MLL | KD, LS | KD, Δ |" in (res / "tables" / "kd_weight.md").read_text()
    sweep = pd.read_csv(res / "tables" / "lambda_sweep.csv")
    assert sweep["teacher_variant"].tolist() == ["mll", "mcmi-0.25-per_epoch", "mcmi-0.5-per_epoch"]
    assert sweep["teacher_cmi"].notna().all() and sweep["teacher_acc"].notna().all()
    assert ("| Pair | Teacher | λ | Teacher acc. | Teacher CMI | CMI raised (seeds) | Over the cliff (seeds, > 1 pt) | "
            "KD student | Δ over MLL |") in (
        res / "tables" / "lambda_sweep.md").read_text()
    assert (res / "figures" / "lambda_sweep.png").stat().st_size > 1000
    student = next((res / "students" / "resnet8" / "label_smoothing-0.2").rglob("alpha0.5/seed0.json"))
    assert '"alpha": 0.5' in student.read_text() and '"gamma": 0.5' in student.read_text()
    # Fig. 2: the stopped teacher is trained for one epoch, measured, distilled from, and beside the full ones
    stopped = json.loads((res / "teachers" / "resnet8" / "mll-e1" / "seed0" / "metrics.json").read_text())
    assert len(stopped["history"]) == 1
    early = pd.read_csv(res / "tables" / "early_stopped.csv")
    assert early["teacher_variant"].tolist() == ["mll-e1", "mll", "mcmi-0.25-per_epoch", "label_smoothing-0.2"]
    assert early["teacher_acc"].notna().all() and early["teacher_cmi"].notna().all()
    assert early["mean"].notna().all() and (early["n"] == 1).all()
    assert (res / "figures" / "early_stopped.png").stat().st_size > 1000
    # method weights: AT at × 0.1 and × 1, the choice written from the validation accuracies
    weights = pd.read_csv(res / "tables" / "method_weights.csv")
    assert {"at"} <= set(weights["method"]) and (weights["evaluated_on"] == "validation").all()
    out = subprocess.run([sys.executable, str(ws.repo / "workflow" / "scripts" / "choose_method_weights.py"),
                          str(res / "tables" / "method_weights.csv"), "--out", str(ws.work / "w.yaml"),
                          "--doc", str(ws.work / "w.md")], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("at: beta x") and "validation" in (ws.work / "w.md").read_text()
    assert "TEST" not in (ws.work / "w.md").read_text()
    # the same choice made in the DAG (rule choose_method_weights), and the λ sweep's (choose_lambda), each saying
    # it was made on the held-out data; the reading names both
    dag = yaml.safe_load((res / "tables" / "method_weights_choice.yaml").read_text())
    assert dag["evaluated_on"] == "validation" and dag["methods"] == yaml.safe_load((ws.work / "w.yaml").read_text())[
        "methods"]
    lam = yaml.safe_load((res / "tables" / "lambda_sweep_choice.yaml").read_text())
    assert lam["evaluated_on"] == "validation" and [r["lambda"] for r in lam["rows"]] == [0.25, 0.5]
    assert "TEST" not in (res / "tables" / "lambda_sweep_choice.md").read_text()
    text = (res / "report" / "reading.rst").read_text()
    assert "Method weights chosen on held-out validation data" in text and "λ sweep (held-out validation" in text
