"""The default configuration still gives the committed numbers (docs/results/default/): rerun here with the same
seeds on the CPU, the seed-0 MLL and MCMI teachers and the KD students distilled from them (student seed 0, which
learns from teacher seed 0). On a machine whose CPU kernels are those that made the committed run (its fingerprint
in docs/results/default/machine.json) they equal the committed runs bit for bit (teacher accuracy and CMI,
students' best- and last-epoch accuracy); on any other machine the rule of `python -m mcmikd compare` finds no cell
that differs from the committed three-seed runs (a rerun elsewhere is one more draw of float rounding, checked
against the seed spread). Only those jobs' chain runs (the rest of the default grid shares their code paths). The
MCMI variant is the one the config names (λ from `teachers.hp.mcmi`)."""

import json

import pytest
import yaml

import pins
from conftest import ROOT
from test_workflow import Workspace, snakemake

pytestmark = pytest.mark.slow
COMMITTED = ROOT / "docs" / "results" / "default"


def test_the_default_teachers_and_students_equal_or_agree_with_the_committed_runs(tmp_path):
    from mcmikd.aggregate import collect_runs, read_runs
    from mcmikd.compare import compare_runs

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["runtime"]["device"] = "cpu"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = "results/digits"
    mcmi = f"mcmi-{cfg['teachers']['hp']['mcmi']['lambda']:g}"
    teachers = {o: f"{res}/teachers/resnet20/{o}/seed0" for o in ("mll", mcmi)}
    students = {o: f"{res}/students/resnet20/{v}/resnet8/kd/full/seed0.json" for o, v in (("mll", "mll"),
                                                                                          ("mcmi", mcmi))}
    snakemake(Workspace(work=tmp_path), *(f"{t}/cmi.json" for t in teachers.values()), *students.values())
    ours = collect_runs([str(tmp_path / s) for s in students.values()],
                        [str(tmp_path / t / f) for t in teachers.values() for f in ("metrics.json", "cmi.json")],
                        "main")
    committed = read_runs(str(COMMITTED / "runs_main.csv"))
    machine = json.loads((COMMITTED / "machine.json").read_text())["machines"]
    here = json.loads((tmp_path / students["mll"]).read_text())["provenance"]["machine"]
    if len(machine) == 1 and pins.same_kernels(here, machine[0]):  # the committed run's kernels: every bit
        kd = committed[(committed["method"] == "kd") & (committed["seed"] == 0)]
        teacher = committed[(committed["role"] == "teacher") & (committed["teacher_seed"] == 0)]
        for _, row in ours.iterrows():
            ref_rows, columns = ((kd, ("best_acc", "last_acc")) if row["role"] == "student"
                                 else (teacher, ("model_acc", "cmi_T1")))
            ref = ref_rows[ref_rows["teacher_variant"] == row["teacher_variant"]].iloc[0]
            assert [row[c] for c in columns] == [ref[c] for c in columns], (row["role"], row["teacher_variant"])
        return
    rows = compare_runs(ours, committed[committed["method"].isin(["kd"]) | (committed["role"] == "teacher")])
    differ = [f"{r['cell']}: {r['ours']} vs {r['theirs']}" for r in rows if r["verdict"] == "differ"]
    assert not differ, differ
    assert sum(r["verdict"] in ("agree", "can't tell") for r in rows) == 8  # 2 teachers × 2, 2 students × 2
