"""The tiny end-to-end config submitted to a real SLURM cluster through snakemake-executor-plugin-slurm.

Needs a running cluster (`sudo tests/cluster/slurm_up.sh` brings a single-node one up on this machine). Without
one the test is skipped, unless MCMIKD_REQUIRE_SLURM=1 (CI sets it): then it fails, so CI cannot pass silently.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from test_workflow import ROOT, SNAKEMAKE, Workspace, planned_jobs, write_config

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REQUIRED = os.environ.get("MCMIKD_REQUIRE_SLURM") == "1"


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return "sinfo/sacct not found"
    try:
        up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
        acct = subprocess.run(["sacct", "-X", "-n", "-P", "--format=JobIdRaw"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer"
    if up.returncode != 0 or not re.search(r"idle|mixed|allocated", up.stdout):
        return f"no usable SLURM node (sinfo: {up.stdout.strip() or up.stderr.strip()})"
    if acct.returncode != 0:
        return "SLURM accounting (sacct) does not work"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        message = f"{problem}; start a cluster with `sudo tests/cluster/slurm_up.sh`"
        if REQUIRED:
            pytest.fail(f"MCMIKD_REQUIRE_SLURM=1 but {message}")
        pytest.skip(message)


def test_tiny_workflow_runs_on_slurm(cluster, tmp_path):
    ws = Workspace(work=tmp_path)
    write_config(ws)
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0]
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(tmp_path / "config.yaml"), "--profile", str(ROOT / "profiles" / "slurm"), "--jobs", "4",
           "--default-resources", f"slurm_partition={partition.rstrip('*')}", "--slurm-no-account",
           "--slurm-init-seconds-before-status-checks", "1"]
    # SIGINT makes Snakemake cancel its SLURM jobs (it ignores SIGTERM while jobs run); -k is the backstop
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    proc = subprocess.run(["timeout", "-s", "INT", "-k", "60", "900", *cmd], capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]

    res = tmp_path / "results" / "tiny"
    for name in ("main", "fewshot", "zeroshot", "temperature"):
        assert (res / "tables" / f"{name}.md").exists()
    assert (res / "figures" / "cam_resnet8.png").exists()

    # SLURM really ran the jobs: every submitted job is in the accounting database, under this run's name,
    # finished COMPLETED; and it ran every non-local rule of the workflow
    run_id = re.search(r"SLURM run ID: (\S+)", log)[1]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    rows = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", started, "--name", run_id,
                           "--format=JobIdRaw,State"], capture_output=True, text=True, check=True).stdout.split()
    states = dict(row.split("|") for row in rows)
    assert submitted and set(states) == submitted
    assert set(states.values()) == {"COMPLETED"}
    for rule in ("prepare_data", "train_teacher", "finetune_mcmi", "measure_cmi", "train_student", "eigen_cam"):
        assert f"rule_{rule}" in log, f"{rule} was not submitted to SLURM"
    assert planned_jobs(ws) == {}  # and the result is complete: nothing left to do
