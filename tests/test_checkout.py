"""A project (the workflow with its config and results in one directory) runs its own code and can be moved.

One finished small run serves every test (`conftest.small_project`): a copy of the workflow, committed to a git
repository of its own, with markers in its package, run with another `mcmikd` (the original checkout's src/)
first on PYTHONPATH."""

import json
import os
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import MARK, ROOT, append
from test_workflow import Workspace, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture
def foreign_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))


def test_the_projects_own_package_runs_at_parse_time_in_preflight_and_in_every_job(small_project):
    proj, log, commit = small_project
    src = os.path.realpath(proj / "src" / "mcmikd")
    assert f"{MARK} (parse) {src}/config.py" in log
    assert f"{MARK} (preflight) {src}/checks.py" in log
    results = [*(proj / "results/tiny/teachers").rglob("metrics.json"),
               *(proj / "results/tiny/students").rglob("*.json")]
    assert len(results) == 3 + 4  # teachers: MLL, MCMI, control; students: CE, and KD from each teacher
    for path in results:
        prov = json.loads(path.read_text())["provenance"]
        assert os.path.realpath(prov["package_file"]) == f"{src}/__init__.py", path
        assert prov["git"]["commit"] == commit, path


def test_editing_a_module_no_job_imports_reruns_nothing(small_project, tmp_path, foreign_env):
    proj = tmp_path / "proj"  # a copy: the shared project is only read (other workers copy it meanwhile)
    subprocess.run(["cp", "-a", str(small_project[0]), str(proj)], check=True)
    for name in ("checks.py", "codedeps.py"):  # the pre-flight only; parse time only
        path = proj / "src" / "mcmikd" / name
        saved, stat = path.read_text(), path.stat()
        try:
            append(path, "\n# an edit no job's result depends on\n")
            assert planned_jobs(Workspace(work=proj, repo=proj)) == Counter(), name
        finally:
            path.write_text(saved)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_copied_or_symlinked_project_reruns_nothing(small_project, tmp_path, foreign_env):
    moved = tmp_path / "elsewhere" / "proj"
    moved.parent.mkdir()
    subprocess.run(["cp", "-a", str(small_project[0]), str(moved)], check=True)
    link = tmp_path / "link"
    link.symlink_to(moved.parent, target_is_directory=True)
    try:
        assert planned_jobs(Workspace(work=moved, repo=moved)) == Counter()
        assert planned_jobs(Workspace(work=link / "proj", repo=link / "proj")) == Counter()
    finally:
        shutil.rmtree(moved)


def test_a_finished_project_handed_over_with_its_metadata_reruns_nothing(small_project, tmp_path, foreign_env):
    """The supported hand-over (docs/reproducibility.md, "Handing a finished project over"): the recipient clones
    the same commit, copies `results/<name>/`, the config and `.snakemake/metadata/` (Snakemake's record of each
    output's params and input checksums), checks with the mtime-free triggers that nothing would rerun, then
    `--touch`es the results (the clone's files are newer than them). Without the metadata every job is planned
    again; a module edited in the clone is caught by the check."""
    proj = small_project[0]
    recipient = tmp_path / "recipient"
    subprocess.run(["git", "clone", "-q", str(proj), str(recipient)], check=True)
    shutil.copy2(proj / "config.yaml", recipient / "config.yaml")
    shutil.copytree(proj / "results", recipient / "results")
    ws = Workspace(work=recipient, repo=recipient)
    without = planned_jobs(ws)
    assert without["train_teacher"] == 1 and sum(without.values()) > 5
    shutil.copytree(proj / ".snakemake" / "metadata", recipient / ".snakemake" / "metadata", dirs_exist_ok=True)
    check = ("--rerun-triggers", "params", "input", "software-env")
    assert planned_jobs(ws, *check) == Counter()
    kd = recipient / "src" / "mcmikd" / "distill" / "methods" / "kd.py"
    saved = kd.read_text()
    append(kd, "\n# the recipient's clone differs here\n")
    changed = planned_jobs(ws, *check)
    assert changed["train_student"] >= 3 and "train_teacher" not in changed  # its students, not the teachers
    kd.write_text(saved)
    snakemake(ws, "--touch")
    assert planned_jobs(ws) == Counter()
