"""`python -m mcmikd compare RUN REFERENCE`: per cell agree / differ / can't tell by the rule of mcmikd.compare, a
summary line, and exit status 0 only when no cell differs; against another run and against published numbers."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT

CONFUSION = json.dumps([[45 if i == j else 0 for j in range(10)] for i in range(10)])  # 450 test images


def _runs(kd=(99.0, 98.8, 99.2), mcmi=(95.0, 99.0, 93.0), teacher=(99.3, 99.1, 99.5), omitted_recall=(10.0, 30.0, 0.0)):
    rows = []
    for objective, variant, accs in (("mll", "mll", kd), ("mcmi", "mcmi-0.35", mcmi)):
        for seed, acc in enumerate(accs):
            rows.append({"experiment": "main", "role": "student", "teacher_arch": "resnet20", "student": "resnet8",
                         "teacher_objective": objective, "teacher_variant": variant, "method": "kd", "setting": "full",
                         "omitted": "", "seed": seed, "teacher_seed": seed, "status": "ok", "reason": None,
                         "best_acc": acc + 0.2, "last_acc": acc, "confusion_last": CONFUSION,
                         "confusion_best": CONFUSION})
    for seed, recall in enumerate(omitted_recall):
        per = [90.0] * 10
        per[3] = recall
        rows.append({**rows[0], "experiment": "zeroshot", "setting": "omit3", "omitted": "3", "seed": seed,
                     "per_class_acc_last": json.dumps(per), "per_class_acc_best": json.dumps(per)})
    for seed, acc in enumerate(teacher):
        rows.append({"experiment": "main", "role": "teacher", "teacher_arch": "resnet20", "teacher_objective": "mll",
                     "teacher_variant": "mll", "teacher_label": "MLL", "teacher_seed": seed, "status": "ok",
                     "model_acc": acc, "cmi_T1": 0.03 + 0.001 * seed, "omitted": "", "setting": ""})
    return pd.DataFrame(rows)


def test_a_rerun_that_differs_by_rounding_agrees_or_cannot_tell_and_a_real_change_differs():
    from mcmikd.compare import compare_runs, summary

    rows = {r["cell"]: r for r in compare_runs(_runs(kd=(99.1, 98.9, 99.0)), _runs())}
    kd_last = rows["main resnet20 → resnet8 full kd (mll): top-1 % (last epoch)"]
    assert kd_last["verdict"] == "agree" and kd_last["d"] == pytest.approx(0.0)  # ±0.2 points, margin 1
    # the MCMI arm drifts by ±3 points from seed to seed: a 3-seed run cannot say
    assert rows["main resnet20 → resnet8 full kd (mcmi-0.35): top-1 % (last epoch)"]["verdict"] == "agree"
    assert rows["zeroshot resnet20 → resnet8 omit3 kd (mll): class 3 recall % (last epoch)"]["verdict"] == "agree"
    changed = {r["cell"]: r for r in compare_runs(_runs(kd=(90.0, 90.4, 89.8), omitted_recall=(60.0, 45.0, 80.0)),
                                                  _runs())}
    assert changed["main resnet20 → resnet8 full kd (mll): top-1 % (last epoch)"]["verdict"] == "differ"
    # a 48-point shift of a recall whose seeds spread by ±15 points: after Holm over the cells, 3 seeds cannot say
    assert changed["zeroshot resnet20 → resnet8 omit3 kd (mll): class 3 recall % (last epoch)"]["verdict"] == \
        "can't tell"
    assert ", 4 differ," in summary(list(changed.values()))  # top-1 of main and zero-shot, last and best epoch


def test_cells_of_one_side_only_are_counted_apart():
    from mcmikd.compare import compare_runs, summary

    ours = _runs()
    rows = compare_runs(ours[ours["experiment"] == "main"], _runs())
    assert {r["verdict"] for r in rows if "zeroshot" in r["cell"]} == {"only theirs"}
    assert summary(rows).endswith("(4 only theirs).")


def test_the_command_prints_a_table_and_a_summary_and_exits_1_only_when_a_cell_differs(tmp_path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for folder, frame in ((a, _runs()), (b, _runs(kd=(99.1, 98.9, 99.0))), (c, _runs(kd=(90.0, 90.4, 89.8)))):
        (folder / "runs").mkdir(parents=True)
        for exp, part in frame.groupby("experiment"):
            part.to_csv(folder / "runs" / f"{exp}.csv", index=False)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "mcmikd", "compare", *map(str, args)], capture_output=True,
                              text=True, cwd=ROOT)

    same = run(b, a)
    assert same.returncode == 0, same.stderr
    assert "0 differ" in same.stdout.splitlines()[-1]
    worse = run(c, a, "--csv", tmp_path / "cells.csv")
    assert worse.returncode == 1 and "| differ |" in worse.stdout
    assert (pd.read_csv(tmp_path / "cells.csv")["verdict"] == "differ").any()
    missing = run(tmp_path / "nowhere", a)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such results folder" in missing.stderr


def test_a_run_of_teachers_only_compares_its_teacher_cells(tmp_path):
    """A rerun of the teachers alone (no student finished) writes a runs table without the student columns; its
    teacher cells are compared and the other run's student cells are counted apart."""
    teachers = _runs()
    teachers = teachers[teachers["role"] == "teacher"].dropna(axis=1, how="all").drop(columns=["omitted", "setting"])
    (tmp_path / "ours" / "runs").mkdir(parents=True)
    teachers.to_csv(tmp_path / "ours" / "runs" / "main.csv", index=False)
    (tmp_path / "theirs" / "runs").mkdir(parents=True)
    _runs().to_csv(tmp_path / "theirs" / "runs" / "main.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "mcmikd", "compare", tmp_path / "ours", tmp_path / "theirs", "--all"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    teacher_rows = [line for line in done.stdout.splitlines() if line.startswith("| teacher resnet20 mll:")]
    assert len(teacher_rows) == 2 and all(line.endswith("| agree |") for line in teacher_rows)  # accuracy, CMI
    assert done.stdout.splitlines()[-1].endswith("(8 only theirs).")  # students: top-1, class-3 recall; 2 epochs


def test_against_published_numbers_with_their_trials(tmp_path):
    """A config's reference block: the entry's trials (5, no std) and our seed spread give the interval."""
    from mcmikd.compare import compare_paper

    cfg = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    cfg["experiments"]["main"]["pairs"] = [{"teacher": "resnet20", "student": "resnet8"}]
    cfg["teachers"]["objectives"] = ["mll", "mcmi"]
    cfg["reference"] = {"experiments": {"main": [
        {"pair": "resnet20 → resnet8", "row": "kd", "teacher_objective": "mll", "value": 99.1, "trials": 5,
         "source": "close"},
        {"pair": "resnet20 → resnet8", "row": "kd", "teacher_objective": "mll", "value": 80.0, "trials": 5,
         "source": "far", "metric": "last"},
        {"pair": "resnet20 → resnet8", "row": "at", "teacher_objective": "mll", "value": 80.0, "source": "not run"}]}}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = _runs()
    rows = compare_paper(runs[runs["experiment"] == "main"], str(path))
    verdicts = {r["theirs"].split()[0] + " " + r["cell"].split("(")[-1]: r["verdict"] for r in rows}
    assert verdicts == {"99.10 best epoch)": "agree", "80.00 last epoch)": "differ", "80.00 best epoch)": "only theirs"}


def test_cam_measurements_are_cells_too(tmp_path):
    """A run that measured CAMs (tables/cam_seeds.csv): each (teacher, map method, metric) is a cell over the teacher
    seeds; percentages get the accuracy margin, fractions the absolute --cam-margin."""
    from mcmikd.compare import compare_runs, read

    def cam(loc, context):
        return pd.DataFrame([{"arch": "resnet20", "teacher_seed": s, "objective": "mll", "method": "eigencam",
                              "metric": m, "value": v, "images": 450}
                             for s in range(3) for m, v in (("localized", loc[s]), ("context", context[s]))])

    folders = {}
    for name, frame in (("a", cam((80.0, 80.2, 79.8), (0.300, 0.302, 0.298))),
                        ("b", cam((80.1, 80.1, 79.9), (0.301, 0.300, 0.299))),
                        ("c", cam((60.0, 60.2, 59.8), (0.500, 0.502, 0.498)))):
        folder = tmp_path / name
        (folder / "runs").mkdir(parents=True)
        _runs().query("experiment == 'main'").to_csv(folder / "runs" / "main.csv", index=False)
        (folder / "tables").mkdir()
        frame.to_csv(folder / "tables" / "cam_seeds.csv", index=False)
        folders[name] = read([str(folder)])
    same = {r["cell"]: r for r in compare_runs(folders["b"], folders["a"])}
    loc = same["CAM resnet20 mll teacher, Eigen-CAM (centred): Loc. acc. (%)"]
    ctx = same["CAM resnet20 mll teacher, Eigen-CAM (centred): Context (mass outside box)"]
    assert loc["verdict"] == "agree" and loc["margin"] == pytest.approx(1.0)
    assert ctx["verdict"] == "agree" and ctx["margin"] == pytest.approx(0.02)
    moved = {r["cell"]: r for r in compare_runs(folders["c"], folders["a"])}
    assert moved["CAM resnet20 mll teacher, Eigen-CAM (centred): Loc. acc. (%)"]["verdict"] == "differ"
    assert moved["CAM resnet20 mll teacher, Eigen-CAM (centred): Context (mass outside box)"]["verdict"] == "differ"
