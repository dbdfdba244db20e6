"""Damaged intermediate files are found before any job runs: a missing one is rebuilt by the next run, one that is
there but damaged stops the run with one line whose `--forcerun` command rebuilds it; either way exactly the job
that wrote it and the jobs that read it rerun, nothing else is rerun or deleted, and the advice a reading job prints
repairs (for real, once: the other cases check the plan).

One finished small run (the main experiment, KD only, one seed: 15 jobs; a copy of `conftest.small_project`) serves
every test; each test puts back
what it damaged or repairs it for real, so the next one starts from a finished run again."""

import os
import re
import subprocess
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcmikd.io import verify_file
from test_integrity import flip_byte_keep_mtime, truncate
from test_workflow import Workspace, job_stats, planned_jobs, snakemake

pytestmark = pytest.mark.slow
RES = Path("results/tiny")
DATA = RES / "data.pt"
TEACHERS = RES / "teachers/resnet8"
AGGREGATES = {"collect_runs": 1, "make_table": 1, "plot_figure": 2, "reading": 1, "all": 1}  # main table, its figure,
# fine-tuning curves, the reading of the main table


@pytest.fixture(scope="module")
def run(small_project, tmp_path_factory):
    """A `cp -a` copy of the shared finished small project (a copied project is up to date: test_checkout)."""
    proj = tmp_path_factory.mktemp("damaged") / "proj"
    subprocess.run(["cp", "-a", str(small_project[0]), str(proj)], check=True)
    ws = Workspace(work=proj, repo=proj)
    assert planned_jobs(ws) == Counter()
    return ws


def teacher_dir(ws, objective: str) -> Path:
    """The results folder of the one teacher (teacher seed 0) of an objective (its variant name holds its
    hyper-parameters)."""
    (found,) = [p.relative_to(ws.work) for p in (ws.work / TEACHERS).iterdir() if p.name.split("-")[0] == objective]
    return found / "seed0"


def result_mtimes(ws) -> dict[str, int]:
    return {str(p.relative_to(ws.work)): p.stat().st_mtime_ns for p in (ws.work / RES).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


@contextmanager
def damaged(path: Path, damage):
    """`damage(path)` for the duration of the block; the file's bytes and times are put back after."""
    saved, stat = path.read_bytes(), path.stat()
    try:
        damage(path)
        yield
    finally:
        path.write_bytes(saved)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def repair_error(out) -> str:
    """The one error line of a run stopped by a damaged file."""
    assert out.returncode != 0
    (line,) = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    return line


def test_a_truncated_data_file_stops_the_run_with_the_line_that_reruns_it_and_everything_that_reads_it(run):
    before = result_mtimes(run)
    with damaged(run.work / DATA, truncate):
        for dry in (["-n"], []):  # the dry run says it too; the run starts no job
            line = repair_error(snakemake(run, *dry, check=False))
            assert line.startswith(f"Error: a recorded intermediate file is damaged ({DATA}: 100 bytes, ")
            assert line.endswith(f"rebuild it and every job that reads it with `snakemake --forcerun {DATA}` plus the "
                                 "options you ran the workflow with (`mcmikd repair` prints the line)")
        command = re.search(r"with `([^`]+)`", line)[1].split()
        out = snakemake(run, "-n", *command[1:])  # the printed line, as a dry run
        assert f"Warning: {DATA} is damaged (100 bytes, " in out.stderr
        assert job_stats(out.stdout + out.stderr) == Counter({"prepare_data": 1, "train_teacher": 1,
                                                              "finetune_teacher": 2, "measure_cmi": 3,
                                                              "train_student": 4, **AGGREGATES})
        assert snakemake(run, "-n", "--forcerun", "prepare_data").returncode == 0  # forcing its rule also does
    assert result_mtimes(run) == before  # nothing was touched


@pytest.mark.parametrize("damage", [truncate, Path.unlink], ids=["truncated", "deleted"])
def test_a_damaged_mll_teacher_reruns_it_the_teachers_fine_tuned_from_it_and_their_students(run, damage):
    """A deleted one is rebuilt by a plain run; a truncated one by the `--forcerun` line its error prints."""
    model = run.work / teacher_dir(run, "mll") / "model.pt"
    forced = [] if damage is Path.unlink else ["--forcerun", str(model.relative_to(run.work))]
    with damaged(model, damage):
        # every teacher starts from the MLL one; only the CE-only student, which has no teacher, is kept
        assert planned_jobs(run, *forced) == Counter({"train_teacher": 1, "finetune_teacher": 2, "measure_cmi": 3,
                                             "train_student": 3, **AGGREGATES})


def test_a_damaged_mcmi_teacher_reruns_only_itself_and_what_reads_it(run):
    mcmi = teacher_dir(run, "mcmi")
    with damaged(run.work / mcmi / "model.pt", truncate):
        assert f"({mcmi / 'model.pt'}: 100 bytes" in repair_error(snakemake(run, "-n", check=False))
        out = snakemake(run, "-n", "--forcerun", str(mcmi / "model.pt"))
    assert f"Warning: {mcmi / 'model.pt'} is damaged" in out.stderr
    assert job_stats(out.stdout + out.stderr) == Counter({"finetune_teacher": 1, "measure_cmi": 1,
                                                          "train_student": 1, **AGGREGATES})


def test_the_advice_a_reading_job_prints_repairs_the_file(run, monkeypatch):
    """A damage the parse-time check cannot see (same size and mtime; no parse-time hashing) is found by the job
    that reads the file; the command in its one-line error rebuilds the file and everything that reads it."""
    monkeypatch.setenv("MCMIKD_PARSE_HASH_BUDGET", "0")
    control = teacher_dir(run, "ce_finetune")
    before = result_mtimes(run)
    flip_byte_keep_mtime(run.work / control / "model.pt")
    student = f"{RES}/students/resnet8/{control.parent.name}/resnet8/kd/full/seed0.json"
    assert planned_jobs(run) == Counter()  # invisible before a job reads it
    failed = snakemake(run, "--forcerun", student, check=False)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("Error: ") and "damaged" in line]
    assert errors and errors[0].startswith(f"Error: {control / 'model.pt'} is damaged (its sha256 is not the one "
                                           f"recorded when it was written); repair it with `snakemake --forcerun ")
    command = re.search(r"repair it with `([^`]+)`", errors[0])[1].split()
    assert command[0] == "snakemake"
    snakemake(run, *command[1:])
    verify_file(run.work / control / "model.pt")
    after = result_mtimes(run)
    assert set(after) == set(before)  # nothing lost
    rewritten = {path for path in after if after[path] != before[path]}
    assert rewritten == {f"{control}/model.pt", f"{control}/best.pt", f"{control}/metrics.json", f"{control}/cmi.json",
                         student, student.replace(".json", ".pt"),  # the student's result and its model
                         f"{RES}/runs/main.csv", f"{RES}/tables/main_gains.csv",
                         *(f"{RES}/tables/main.{ext}" for ext in ("csv", "md", "tex")),
                         *(f"{RES}/figures/{fig}.{ext}" for fig in ("main_delta", "teachers_finetuning")
                           for ext in ("png", "pdf")),
                         f"{RES}/report/reading.rst", f"{RES}/report/first_page.rst"}
    assert planned_jobs(run) == Counter()  # a run after the repair is a no-op
