"""A project (the workflow with its config and results in one directory) runs its own code and can be moved.

One finished tiny run serves every test: a copy of the workflow, committed to a git repository of its own, with
markers in its package, run with another `mcmikd` (the original checkout's src/) first on PYTHONPATH."""

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT
from test_workflow import Workspace, copy_workflow, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow
MARK = "marker: mcmikd from the project copy"


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def small_grid(c):
    """The tiny config's main experiment only (every job kind but CAM and the other experiments' students)."""
    c["students"]["seeds"] = [0]
    c["experiments"]["main"]["methods"] = ["kd"]
    for name in ("fewshot", "zeroshot", "temperature", "cam"):
        c["experiments"][name]["enabled"] = False


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A finished tiny run in its own project directory (work dir == workflow dir), run with the original
    checkout's package first on PYTHONPATH (as an editable install of a second clone would be)."""
    base = tmp_path_factory.mktemp("project")
    proj = copy_workflow(base / "proj")
    pkg = proj / "src" / "mcmikd"
    # parse time imports mcmikd.config, onstart imports mcmikd.checks: both say which file they came from
    append(pkg / "config.py", f'\nimport sys as _sys\nprint("{MARK} (parse)", __file__, file=_sys.stderr)\n')
    append(pkg / "checks.py", f'\nimport sys as _sys\nprint("{MARK} (preflight)", __file__, file=_sys.stderr)\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=proj, check=True)
    subprocess.run([*git, "add", "-A"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=proj, check=True)
    write_config(proj, small_grid)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT / "src"))  # the foreign mcmikd, ahead of everything else
        out = snakemake(Workspace(work=proj, repo=proj))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True, text=True).stdout.strip()
    return proj, out.stdout + out.stderr, commit


@pytest.fixture
def foreign_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))


def test_the_projects_own_package_runs_at_parse_time_in_preflight_and_in_every_job(project):
    proj, log, commit = project
    src = os.path.realpath(proj / "src" / "mcmikd")
    assert f"{MARK} (parse) {src}/config.py" in log
    assert f"{MARK} (preflight) {src}/checks.py" in log
    results = [*(proj / "results/tiny/teachers").rglob("metrics.json"), *(proj / "results/tiny/students").rglob("*.json")]
    assert len(results) == 3 + 4  # teachers: MLL, MCMI, control; students: CE, and KD from each teacher
    for path in results:
        prov = json.loads(path.read_text())["provenance"]
        assert os.path.realpath(prov["package_file"]) == f"{src}/__init__.py", path
        assert prov["git"]["commit"] == commit, path


def test_editing_a_module_no_job_imports_reruns_nothing(project, foreign_env):
    proj = project[0]
    for name in ("checks.py", "codedeps.py"):  # onstart only; parse time only
        path = proj / "src" / "mcmikd" / name
        saved, stat = path.read_text(), path.stat()
        try:
            append(path, "\n# an edit no job's result depends on\n")
            assert planned_jobs(Workspace(work=proj, repo=proj)) == Counter(), name
        finally:
            path.write_text(saved)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_copied_or_symlinked_project_reruns_nothing(project, tmp_path, foreign_env):
    moved = tmp_path / "elsewhere" / "proj"
    moved.parent.mkdir()
    subprocess.run(["cp", "-a", str(project[0]), str(moved)], check=True)
    link = tmp_path / "link"
    link.symlink_to(moved.parent, target_is_directory=True)
    try:
        assert planned_jobs(Workspace(work=moved, repo=moved)) == Counter()
        assert planned_jobs(Workspace(work=link / "proj", repo=link / "proj")) == Counter()
    finally:
        shutil.rmtree(moved)
