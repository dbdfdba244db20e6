"""The tiny end-to-end config, submitted to a real SLURM cluster with `--profile profiles/slurm`.

Needs a reachable cluster with accounting (`sudo tests/cluster/slurm_up.sh` brings up a single-node one on this
machine). Without one the test is skipped, unless MCMIKD_REQUIRE_SLURM=1 (CI sets it): then it fails.
"""

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import assert_tiny_outputs_exist
from test_workflow import ROOT, SNAKEMAKE, Workspace, planned_jobs, write_config

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REQUIRED = os.environ.get("MCMIKD_REQUIRE_SLURM") == "1"
PROFILE = ROOT / "profiles" / "slurm"
TIMEOUT_S = 600  # then Snakemake is stopped; 600 + 60 s stays below pytest's own timeout (pyproject.toml)
TRAINING_RULES = {"train_teacher", "finetune_teacher", "measure_cmi", "train_student", "eigen_cam"}


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _cluster_problem() -> str | None:
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    try:
        nodes = _run("sinfo", "-h", "-o", "%T")
        acct = _run("sacct", "-X", "-n", "-P", "--format=JobIdRaw")
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer"
    if nodes.returncode != 0:
        return f"`sinfo` failed: {nodes.stderr.strip()}"
    if not re.search(r"^(idle|mixed|allocated|completing)", nodes.stdout, re.M):
        return f"no usable SLURM node (sinfo: {' '.join(nodes.stdout.split()) or 'nothing'})"
    if acct.returncode != 0:  # the plugin polls job states with sacct: without accounting it waits for ever
        return f"SLURM accounting does not work (`sacct`: {acct.stderr.strip()})"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')"
    return None


def _run_snakemake(cmd: list[str], log_path: Path) -> int:
    """Run Snakemake to the end. If it takes longer than TIMEOUT_S, or the test is interrupted (Ctrl-C, pytest's
    timeout), stop it with SIGINT: then it cancels its SLURM jobs (it ignores SIGTERM while jobs run); SIGKILL 60 s
    later is the last resort. Its own session, so that only this function signals it, once."""
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=TIMEOUT_S)
        except BaseException:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


@pytest.fixture(scope="module")
def cluster() -> dict:
    problem = _cluster_problem()
    if problem:
        message = f"{problem}; `sudo tests/cluster/slurm_up.sh` starts a single-node cluster on this machine"
        if REQUIRED:
            pytest.fail(f"MCMIKD_REQUIRE_SLURM=1 but {message}", pytrace=False)
        pytest.skip(message)
    partitions = _run("sinfo", "-h", "-o", "%P").stdout.split()
    partition = next((p for p in partitions if p.endswith("*")), partitions[0]).rstrip("*")  # the default one
    gpus = "gpu" in _run("sinfo", "-h", "-p", partition, "-o", "%G").stdout
    return {"partition": partition, "gpus": gpus}


def _resources(gpus: bool) -> dict:
    """A `resources:` section with distinct sizes per rule, so that each rule's request can be found in sacct."""
    table = {
        "default": {"mem_mb": 1000, "runtime": 5},
        "train_teacher": {"mem_mb": 1100, "runtime": 6},
        "train_student": {"mem_mb": 900, "runtime": 4},
        "eigen_cam": {"mem_mb": 1200, "runtime": 7, "cpus_per_task": 2},
    }
    if gpus:  # slurm_up.sh gives the node a placeholder GPU; the tiny config still computes on the CPU
        table["eigen_cam"]["gpu"] = 1  # and a GPU job still gets --cpus-per-task (not --cpus-per-gpu)
    return table


def _command(tmp_path: Path, cluster: dict, *extra: str) -> list[str]:
    """The profile as a user would run it, with this cluster's partition for the site-specific names."""
    partition = cluster["partition"]
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(tmp_path / "config.yaml"), "--profile", str(PROFILE), "--jobs", "4",
            "--default-resources", f"slurm_partition={partition}",
            "--set-resources", *(f"{rule}:slurm_partition={partition}" for rule in profile.get("set-resources", {})),
            "--slurm-init-seconds-before-status-checks", "1", *extra]


def test_tiny_workflow_runs_on_slurm(cluster, tmp_path):
    ws = Workspace(work=tmp_path)
    resources = _resources(cluster["gpus"])

    def mutate(c):  # every job kind runs as a SLURM job; one seed and one method keep the job count (and time) down
        c.update(resources=resources)
        c["teachers"]["seeds"] = [0]
        c["students"]["seeds"] = [0]
        c["experiments"]["main"]["methods"] = ["kd"]

    write_config(ws, mutate)
    plan = planned_jobs(ws)

    cmd = _command(tmp_path, cluster)
    log_path = tmp_path / "snakemake.log"
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    try:
        returncode = _run_snakemake(cmd, log_path)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:  # a run that failed or was stopped may leave jobs behind, which would hold up the next tests
        log = log_path.read_text()
        run_id = re.search(r"SLURM run ID: (\S+)", log)
        if run_id:
            subprocess.run(["scancel", "--name", run_id[1]], capture_output=True)
    assert returncode is not None, f"snakemake took over {TIMEOUT_S} s and was stopped; log {log_path}:\n{log[-5000:]}"
    assert returncode == 0, f"snakemake exited {returncode}; log {log_path}:\n{log[-5000:]}"
    assert run_id, f"the SLURM executor did not start; log {log_path}:\n{log[-5000:]}"
    run_id = run_id[1]

    res = tmp_path / "results" / "tiny"
    assert_tiny_outputs_exist(res)

    # every job that does not run on the head node (localrules: tables and figures) was one SLURM job
    submitted = {job: next(part[5:] for part in Path(path).parts if part.startswith("rule_"))  # <logdir>/rule_X/…
                 for job, path in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)}
    local = set(re.findall(r"^localrule (\w+):", log, re.M)) | {"all"}
    expected = Counter({rule: n for rule, n in plan.items() if rule not in local})
    assert TRAINING_RULES <= set(expected), f"training jobs ran on the head node: {local & TRAINING_RULES}"
    assert Counter(submitted.values()) == expected

    # SLURM ran them: sacct lists each one under this run's name, COMPLETED, with the config's resources
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", started, "--name", run_id,
                          "--format=JobIdRaw,State,ReqMem,Timelimit,AllocCPUS,AllocTRES"],
                         capture_output=True, text=True, check=True).stdout
    accounted = {row.split("|")[0]: row.split("|")[1:] for row in out.splitlines()}
    assert set(accounted) == set(submitted), f"sacct:\n{out}\nsubmitted: {submitted}"
    for job, (state, mem, limit, cpus, tres) in accounted.items():
        rule = submitted[job]
        want = {**resources["default"], **resources.get(rule, {})}
        assert state == "COMPLETED", (job, rule, state)
        assert (mem, limit) == (f"{want['mem_mb']}M", f"00:{want['runtime']:02d}:00"), (job, rule, mem, limit)
        assert int(cpus) == want.get("cpus_per_task", 1), (job, rule, cpus)
        assert ("gres/gpu=1" in tres) == bool(want.get("gpu")), (job, rule, tres)

    assert planned_jobs(ws) == Counter()  # the result is complete: nothing left to do


STUDENT = "results/tiny/students/resnet8/mll/resnet8/kd/full/seed0.json"


def test_a_config_edited_while_jobs_are_queued_changes_no_job(cluster, tmp_path):
    """Each SLURM job parses the workflow again and re-reads the config file; an edit made after the head planned
    the run must not reach a later job (mcmikd.planned): every job runs the planned config and says so."""
    ws = Workspace(work=tmp_path)

    def mutate(c):
        c.update(resources=_resources(cluster["gpus"]))
        c["teachers"]["seeds"] = [0]

    write_config(ws, mutate)
    planned_recipe = dict(yaml.safe_load((tmp_path / "config.yaml").read_text())["students"]["training"])
    cmd = _command(tmp_path, cluster, "--slurm-keep-successful-logs", "--", STUDENT)
    log_path = tmp_path / "snakemake.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + TIMEOUT_S
            while "submitted with SLURM jobid" not in log_path.read_text() and proc.poll() is None:
                assert time.time() < deadline, "no job was submitted"
                time.sleep(0.2)
            # the first job is queued or running: the user edits the config (a recipe the student job reads)
            edited = yaml.safe_load((tmp_path / "config.yaml").read_text())
            edited["students"]["training"].update(lr=planned_recipe.get("lr", 0.05) / 10,
                                                  epochs=planned_recipe["epochs"] + 1)
            (tmp_path / "config.yaml").write_text(yaml.safe_dump(edited))
            returncode = proc.wait(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
            run_id = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
            if run_id:
                subprocess.run(["scancel", "--name", run_id[1]], capture_output=True)
    log = log_path.read_text()
    assert returncode == 0, f"snakemake exited {returncode}; log {log_path}:\n{log[-5000:]}"
    result = yaml.safe_load((tmp_path / STUDENT).read_text())  # JSON is YAML
    recipe = result["provenance"]["config"]["recipe"]
    assert (recipe["lr"], recipe["epochs"]) == (planned_recipe.get("lr", 0.05), planned_recipe["epochs"])
    assert len(result["history"]) == planned_recipe["epochs"]
    notes = [p for p in (tmp_path / "logs" / "slurm").rglob("*.log")
             if "the config files changed after this run was planned" in p.read_text()]
    assert notes, "no job said that it ran the planned config"
    # the edit is a change of meaning: the next run with the edited config retrains the student, and only it
    assert planned_jobs(ws, STUDENT) == Counter({"train_student": 1})
