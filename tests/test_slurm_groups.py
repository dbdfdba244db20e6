"""Packing several trainings into one SLURM GPU allocation (docs/running.md, "Running on a SLURM cluster"):
Snakemake groups of N `train_student` jobs, each asking for no GPU of its own (`gpu=0`) and the same `gres='gpu:1'`
string, which a group passes through unchanged (string resources are not summed), so the plugin submits each group
with `--gres=gpu:1`. Checked with a dry run of the tiny config through the SLURM profile: no cluster needed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_group_flags_pack_students_into_one_gpu_allocation(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    config = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(tmp_path / "config.yaml"), "--profile", str(ROOT / "profiles" / "slurm"), "-n",
           "--groups", "train_student=students", "--group-components", "students=4",
           "--set-resources", "train_student:slurm_partition=gpu", "train_student:gpu=0", "train_student:gres='gpu:1'"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    students = int(re.search(r"^train_student\s+(\d+)$", log, re.M)[1])
    assert log.count("Group job students") == -(-students // 4)
    requests = re.findall(r"rule train_student:\n(?:.*\n)*?\s*resources: (.*)", log)  # each job's resources
    assert len(requests) == students
    for request in requests:
        resources = dict(kv.split("=", 1) for kv in request.split(", "))
        assert (resources["gpu"], resources["gres"], resources["slurm_partition"]) == ("0", "gpu:1", "gpu"), request
