"""The default configuration still gives the committed numbers (docs/results/default/): rerun here with the same
seeds on the CPU, the seed-0 MLL and MCMI teachers and the KD students distilled from them (student seed 0, which
learns from teacher seed 0) equal, bit for bit, the runs behind the committed main table (`runs_main.csv`: teacher
accuracy and CMI, students' best- and last-epoch accuracy). Only those jobs' chain runs (the rest of the default grid
shares their code paths and would take minutes). The MCMI variant is the one the config names (λ from
`teachers.hp.mcmi`)."""

import json

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from test_workflow import Workspace, snakemake

pytestmark = pytest.mark.slow
COMMITTED = ROOT / "docs" / "results" / "default" / "runs_main.csv"


def test_the_default_teachers_and_students_equal_the_committed_runs(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["runtime"]["device"] = "cpu"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = "results/digits"
    mcmi = f"mcmi-{cfg['teachers']['hp']['mcmi']['lambda']:g}"
    teachers = {o: f"{res}/teachers/resnet20/{o}/seed0" for o in ("mll", mcmi)}
    students = {o: f"{res}/students/resnet20/{v}/resnet8/kd/full/seed0.json" for o, v in (("mll", "mll"),
                                                                                          ("mcmi", mcmi))}
    snakemake(Workspace(work=tmp_path), *(f"{t}/cmi.json" for t in teachers.values()), *students.values())
    committed = pd.read_csv(COMMITTED)
    for variant, folder in teachers.items():
        ref = committed[(committed["role"] == "teacher") & (committed["teacher_variant"] == variant)
                        & (committed["teacher_seed"] == 0)].iloc[0]
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        cmi = json.loads((tmp_path / folder / "cmi.json").read_text())["train"]["cmi"]["1.0"]
        assert (metrics["model_acc"], cmi) == (ref["model_acc"], ref["cmi_T1"]), variant
    for objective, path in students.items():
        ref = committed[(committed["role"] == "student") & (committed["teacher_objective"] == objective)
                        & (committed["method"] == "kd") & (committed["seed"] == 0)].iloc[0]
        result = json.loads((tmp_path / path).read_text())
        assert result["teacher_seed"] == 0
        assert (result["best_acc"], result["last_acc"]) == (ref["best_acc"], ref["last_acc"]), objective
