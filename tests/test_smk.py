"""`smk.run_job`, what a failed or interrupted job shows: Snakemake prints a failed job's log (show-failed-logs), so
the job writes each failure to its log once and lets no exception reach the interpreter (whose traceback would be
a second copy on the terminal)."""

import json
import os
import sys
from types import SimpleNamespace

import pytest

from mcmikd import jobprogress as progress
from mcmikd.errors import ConfigError
from mcmikd.smk import INTERRUPTED, run_job


def _job(tmp_path, func, **kwargs):
    """Run `func` as a job with a log; returns (exit status, the log's text)."""
    log = tmp_path / "logs" / "job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        run_job(SimpleNamespace(log=[str(log)]), func, **kwargs)
    except SystemExit as exit_:
        status = exit_.code
    assert sys.stderr is sys.__stderr__ and sys.stdout is sys.__stdout__  # restored whatever happened
    return status, log.read_text()


def test_ctrl_c_is_one_line_and_keeps_the_resume_checkpoint(tmp_path, capfd):
    resume = tmp_path / ".seed0.resume.pt"

    def training(resume_path):
        print("epoch 1/3 ...")
        open(resume_path, "wb").close()  # the epoch checkpoint written so far
        raise KeyboardInterrupt

    status, log = _job(tmp_path, training, resume_path=str(resume))
    assert status == INTERRUPTED == 130
    assert log == (f"epoch 1/3 ...\nInterrupted (Ctrl-C); its epoch checkpoint {resume} is kept: "
                   f"a rerun resumes from it\n")
    assert resume.exists()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err


def test_ctrl_c_before_any_checkpoint(tmp_path):
    def prepare():
        raise KeyboardInterrupt

    assert _job(tmp_path, prepare) == (INTERRUPTED, "Interrupted (Ctrl-C)\n")


def test_a_user_error_is_one_line_in_the_log_and_on_the_terminal(tmp_path, capfd):
    def bad():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available")

    status, log = _job(tmp_path, bad)
    assert status == 1 and log == "Error: runtime.device is 'cuda' but no CUDA device is available\n"
    assert capfd.readouterr().err == log


def test_a_read_only_results_folder_is_one_line(tmp_path, monkeypatch, capfd):
    """As root, chmod cannot make a folder refuse writes; the refusal is simulated at the rename."""
    from mcmikd.io import write_json

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    out = tmp_path / "results" / "x.json"
    status, log = _job(tmp_path, write_json, path=out, data={})
    assert status == 1
    assert log == f"Error: cannot write {out} (Permission denied); make {out.parent} writable or choose another name\n"
    assert "Traceback" not in capfd.readouterr().err


def test_a_bug_prints_its_traceback_once(tmp_path, capfd):
    def buggy():
        return {}["missing"]

    status, log = _job(tmp_path, buggy)
    assert status == 1 and log.count("Traceback") == 1 and log.rstrip().endswith("KeyError: 'missing'")
    assert "Traceback" not in capfd.readouterr().err  # Snakemake shows the log; nothing else repeats it


def test_without_a_log_the_traceback_still_appears_once(capfd):
    with pytest.raises(SystemExit):
        run_job(SimpleNamespace(log=[]), lambda: {}["missing"])
    assert capfd.readouterr().err.count("Traceback") == 1


def test_the_progress_file_records_how_the_job_ended(tmp_path):
    def training(state):
        progress.started("main", 0, 3)
        progress.epoch_done("main", 1, 3, 0.5, test_acc=50.0)
        if state == "interrupted":
            raise KeyboardInterrupt
        if state == "failed":
            raise ConfigError("diverged")

    path = tmp_path / "logs" / "job.progress.json"
    for state in ("done", "interrupted", "failed"):
        _job(tmp_path, training, state=state)
        record = json.loads(path.read_text())
        assert (record["state"], record["epoch"], record["test_acc"]) == (state, 1, 50.0)
    assert record["error"] == "diverged" and not progress.active()
    _job(tmp_path, lambda: None)  # a job that never trains leaves no progress file (and removes an old one)
    assert not path.exists()


def test_an_unwritable_log_is_one_line(tmp_path, capfd):
    blocker = tmp_path / "logs"
    blocker.write_text("")  # a file where the log folder should be
    with pytest.raises(SystemExit) as exit_:
        run_job(SimpleNamespace(log=[str(blocker / "job.log")]), lambda: None)
    assert exit_.value.code == 1
    err = capfd.readouterr().err
    assert err.startswith(f"Error: cannot write {blocker / 'job.log'} (") and err.count("\n") == 1
