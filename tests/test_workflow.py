"""End to end: the real Snakefile on a tiny config in a temporary directory."""

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> Counter:
    """Jobs a dry run would execute, per rule (parsed from Snakemake's job stats table)."""
    out = snakemake(workdir, "-n", *args)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return Counter()
    stats = text.split("Job stats:", 1)[1]
    counts = Counter()
    for line in stats.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def write_config(workdir: Path, mutate=None) -> None:
    cfg = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    if mutate:
        mutate(cfg)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    write_config(workdir)
    snakemake(workdir)
    return workdir


def test_every_table_and_figure_exists_with_the_expected_rows(finished_run):
    res = finished_run / "results" / "tiny"
    for exp in ("main", "fewshot", "zeroshot", "temperature"):
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{exp}.{ext}").stat().st_size > 0
    for fig in ("fewshot", "zeroshot_bars", "zeroshot_confusion", "temperature", "teachers_mcmi", "cam_resnet8"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    main = pd.read_csv(res / "tables" / "main.csv")
    assert set(main["row"]) == {"teacher", "ce", "kd"}
    kd = main[main["row"] == "kd"].set_index("teacher_kind")
    assert set(kd.index) == {"mll", "mcmi"} and (kd["n"] == 2).all()  # two seeds each
    md = (res / "tables" / "main.md").read_text()
    for label in ("Teacher acc. (MLL)", "Teacher CMI (MCMI)", "Student (no KD)", "KD + MCMI teacher"):
        assert label in md
    assert "\\toprule" in (res / "tables" / "main.tex").read_text()
    zero = pd.read_csv(res / "tables" / "zeroshot.csv")
    ce = zero[zero["method"] == "ce"]
    assert list(ce["class"]) == [3] and float(ce["mean"].iloc[0]) == 0.0  # never saw a 3: 0 % by construction
    assert set(pd.read_csv(res / "tables" / "fewshot.csv")["fraction"]) == {0.1}
    assert set(pd.read_csv(res / "tables" / "temperature.csv")["temperature"]) == {1.0, 4.0}


def test_second_invocation_is_a_no_op(finished_run):
    assert planned_jobs(finished_run) == Counter()
    start = time.perf_counter()
    out = snakemake(finished_run)
    assert "Nothing to be done" in out.stdout + out.stderr
    assert time.perf_counter() - start < 30  # generous here; the benchmark measures the real number


def test_changing_one_experiment_setting_reruns_only_its_students_and_aggregates(finished_run):
    work = finished_run
    write_config(work, lambda c: c["experiments"]["fewshot"].update(epoch_length="subset"))
    try:
        jobs = planned_jobs(work)
        assert jobs == Counter({"train_student": 2, "collect_runs": 1, "make_table": 1, "plot_fewshot": 1,
                                "all": 1}), jobs
    finally:
        write_config(work)


def test_adding_a_seed_adds_only_the_new_jobs(finished_run):
    write_config(finished_run, lambda c: c["experiments"]["zeroshot"].update(seeds=[0, 1]))
    try:
        jobs = planned_jobs(finished_run)
        # the new seed's CE-only, KD-MLL and KD-MCMI students, then the zero-shot tables and figures
        assert jobs == Counter({"train_student": 3, "collect_runs": 1, "make_table": 1, "plot_zeroshot_bars": 1,
                                "plot_zeroshot_confusion": 1, "all": 1}), jobs
    finally:
        write_config(finished_run)


def test_bad_config_stops_before_any_job_with_one_line(tmp_path):
    write_config(tmp_path, lambda c: c["experiments"]["main"].update(methods=["kd", "kdd"]))
    out = snakemake(tmp_path, check=False)
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert lines == ["Error: config key 'experiments.main.methods[1]': unknown method 'kdd'; "
                     "choose one of: " + lines[0].split("choose one of: ")[1]]
    assert not (tmp_path / "results").exists()


def test_unknown_method_key_is_caught_before_training(tmp_path):
    write_config(tmp_path, lambda c: c["methods"]["kd"].update(tempreature=4))
    out = snakemake(tmp_path, check=False)
    assert out.returncode != 0
    assert "Error: method 'kd' for resnet8 → resnet8: methods.kd: unknown key(s) ['tempreature']" in out.stderr
    assert not (tmp_path / "results").exists()
