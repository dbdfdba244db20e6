"""Crash safety with real processes: a training job SIGKILLed mid-run (node loss) and started again resumes from
its last epoch checkpoint and ends with exactly the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import time

import pytest

from test_workflow import ROOT, SNAKEMAKE, write_config

pytestmark = pytest.mark.slow
TARGET = "results/tiny/students/resnet8/mll/resnet8/kd/full/seed0.json"


def _run(workdir, *args, **kwargs):
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _comparable(path):
    m = json.loads(path.read_text())
    return {"best_acc": m["best_acc"], "last_acc": m["last_acc"], "confusion": m["confusion_last"],
            "per_class": m["per_class_acc_last"],
            "curves": [(h["epoch"], h["train"], h["test_acc"], h["test_cmi"]) for h in m["history"]]}


def test_sigkilled_job_resumes_to_identical_metrics(tmp_path):
    write_config(tmp_path, lambda c: c["students"]["training"].update(epochs=5))
    assert _run(tmp_path, TARGET).returncode == 0
    target = tmp_path / TARGET
    uninterrupted = _comparable(target)
    resume = target.with_name(".seed0.resume.pt")
    assert not resume.exists()  # cleared after a successful run

    # run the same job again from scratch and kill the whole process tree (Snakemake and the job) mid-training
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(tmp_path / "config.yaml"), "--cores", "1", "--forcerun", TARGET, "--", TARGET]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert resume.exists(), "the job never wrote an epoch checkpoint"
    epochs_done = None
    time.sleep(0.3)  # land somewhere inside a later epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists(), "a killed job must not leave a complete-looking result"
    import torch

    epochs_done = torch.load(resume, weights_only=True)["next_epoch"] - 1
    assert 1 <= epochs_done < 5

    # as after a node loss: unlock, and run again; --rerun-incomplete (default profile) restarts the job
    assert _run(tmp_path, "--unlock").returncode == 0
    rerun = _run(tmp_path, TARGET)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (tmp_path / "logs/tiny/train_student/resnet8/mll/resnet8/kd/full/seed0.log").read_text()
    assert f"epoch {epochs_done + 1}" in log and "resumed from" in log
    assert _comparable(target) == uninterrupted


def test_sigterm_lets_the_running_job_finish_and_says_what_happened(tmp_path):
    """SIGTERM to Snakemake (a batch system's limit, `kill`): the running job finishes and is kept, no new job
    starts, and the run says it was stopped, not that a job failed; the rerun does only what is missing."""
    write_config(tmp_path, lambda c: c["students"]["training"].update(epochs=5))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(tmp_path / "config.yaml"), "--cores", "1", "--", TARGET]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while (time.time() < deadline and proc.poll() is None
           and not any(tmp_path.glob("results/tiny/teachers/**/.*resume.pt"))):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before any training job started"
    proc.send_signal(signal.SIGTERM)  # to Snakemake only, as `kill PID` does
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "Stopped by SIGTERM at " in out and "no job failed" in out, out[-3000:]
    assert "planned job(s) did not run" in out
    assert list(tmp_path.glob("results/tiny/teachers/*/*/seed0/model.pt")), "the running teacher job was kept"
    assert not (tmp_path / TARGET).exists(), "no job may start after the signal"
    assert _run(tmp_path, "--unlock").returncode == 0
    dry = _run(tmp_path, "-n", TARGET)
    assert dry.returncode == 0 and "train_student" in dry.stdout and "train_teacher" not in dry.stdout, dry.stdout
    rerun = _run(tmp_path, TARGET)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
