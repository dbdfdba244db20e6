"""Training progress: `engine.fit` keeps a job's progress file up to date each epoch (without changing what it
computes), `run_job` records the end state, and `python -m mcmikd.progress` shows one line per job."""

import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT
from mcmikd import jobprogress, progress
from mcmikd.data import DatasetTensors
from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fit

CPU = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)


@pytest.fixture(autouse=True)
def _no_recording():
    yield
    jobprogress.record_to(None)


class Linear(torch.nn.Module):
    """The smallest objective `fit` trains: a linear classifier, optionally with a one-loss init stage."""

    def __init__(self, init_epochs=0):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
        self.init_epochs = init_epochs

    def forward(self, x):
        return self.net(x)

    def learnable_parameters(self):
        return list(self.parameters())

    def init_stage(self):
        loss = lambda images, labels: {"init": self.net(images).pow(2).mean()}  # noqa: E731
        return SimpleNamespace(epochs=self.init_epochs, parameters=self.learnable_parameters(), lr=None, loss=loss)

    def forward_train(self, images, labels, **_):
        logits = self.net(images)
        return logits, {"ce": torch.nn.functional.cross_entropy(logits, labels)}

    def checkpoint_state(self):
        return self.state_dict()

    def load_checkpoint_state(self, state):
        self.load_state_dict(state)


def _fit(epochs=3, init_epochs=0, resume=None):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    images = (torch.rand(40, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    data = DatasetTensors(name="r", train_images=images, train_labels=labels, test_images=images[:12],
                          test_labels=labels[:12], mean=(0.5,), std=(0.25,), class_names=list("abcd"), hflip=False)
    stream = TrainStream(data, CPU, padding=1)
    model = Linear(init_epochs)
    return fit(model, stream, Recipe(epochs=epochs, batch_size=16, lr=0.1), runtime=CPU, seed=0,
               resume=ResumeFile(resume, "x"),
               evaluator=lambda: evaluate(model, data.test_images, data.test_labels, stream.normalize, CPU, 4))


def _numbers(result):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]


def test_fit_writes_progress_each_epoch_and_computes_exactly_what_it_did_without(tmp_path, monkeypatch):
    path = tmp_path / "logs" / "job.progress.json"
    seen = []
    real_write = jobprogress._write

    def spy(**fields):
        real_write(**fields)
        if jobprogress.active():
            seen.append(json.loads(path.read_text()))

    monkeypatch.setattr(jobprogress, "_write", spy)
    plain = _fit(init_epochs=2)
    assert seen == [] and not path.parent.exists()  # nothing recorded unless a job asked for it
    jobprogress.record_to(path)
    recorded = _fit(init_epochs=2)
    assert _numbers(recorded) == _numbers(plain)  # the same arithmetic and random draws, to the bit
    assert recorded.last["confusion"] == plain.last["confusion"]
    assert [(r["phase"], r["epoch"], r["epochs"]) for r in seen] == [
        ("init", 0, 2), ("init", 1, 2), ("init", 2, 2), ("main", 1, 3), ("main", 2, 3), ("main", 3, 3)]
    last = seen[-1]
    assert last["state"] == "running" and last["pid"] == os.getpid() and last["host"] == socket.gethostname()
    assert last["test_acc"] == recorded.last["test_acc"] and last["best_acc"] == recorded.best["test_acc"]
    assert last["eta_s"] == 0 and seen[1]["test_acc"] is None
    seconds = [h["seconds"] for h in recorded.history]
    assert seen[1]["eta_s"] == pytest.approx(seconds[0] * (1 + 3))  # 1 init and 3 main epochs to go
    assert last["seconds_per_epoch"] == pytest.approx(sum(seconds) / 5)
    assert not list(path.parent.glob(".*.tmp"))


def test_a_resumed_fit_starts_its_progress_where_the_checkpoint_is(tmp_path, monkeypatch):
    resume = tmp_path / ".job.resume.pt"
    path = tmp_path / "job.progress.json"
    jobprogress.record_to(path)
    real = jobprogress.epoch_done

    def dying(phase, epoch, *args, **kwargs):
        real(phase, epoch, *args, **kwargs)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(jobprogress, "epoch_done", dying)
    with pytest.raises(KeyboardInterrupt):
        _fit(epochs=4, resume=resume)
    monkeypatch.setattr(jobprogress, "epoch_done", real)
    started = []
    monkeypatch.setattr(jobprogress, "started", lambda *a, **k: started.append((a, k)))
    _fit(epochs=4, resume=resume)
    (phase, done, epochs), fields = started[0]
    assert (phase, done, epochs) == ("main", 2, 4) and fields["test_acc"] is not None


def test_a_progress_file_that_cannot_be_written_is_reported_once_and_training_goes_on(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    jobprogress.record_to(blocker / "sub" / "job.progress.json")  # its folder cannot be made: a file is in the way
    result = _fit(epochs=2)
    assert len(result.history) == 2
    err = capsys.readouterr().err
    assert err.count("progress not recorded: cannot write") == 1


# --------------------------------------------------------------------------------------------- the command
NOW = 1_000_000.0


def _write(folder, job, **record):
    path = folder / f"{job}{progress.SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "updated": NOW - 10, **record}))


def _synthetic(logs):
    _write(logs, "train_student/mll/mll/resnet8/kd/full/seed0", state="running", phase="main", epoch=12, epochs=30,
           test_acc=97.111, best_acc=97.5, seconds_per_epoch=4.25, eta_s=76.5)
    _write(logs, "train_teacher/resnet20.mcmi", state="running", phase="init", epoch=1, epochs=5, test_acc=None,
           seconds_per_epoch=2.0, eta_s=3700)
    _write(logs, "train_teacher/resnet20.mll", state="done", phase="main", epoch=30, epochs=30, test_acc=99.11,
           best_acc=99.33, seconds_per_epoch=3.0, eta_s=0)
    _write(logs, "train_student/none/none/resnet8/ce/full/seed1", state="interrupted", phase="main", epoch=3,
           epochs=30, test_acc=80.0, best_acc=81.0, seconds_per_epoch=1.0, eta_s=None)
    _write(logs, "train_student/none/none/resnet8/ce/full/seed2", state="running", phase="main", epoch=3,
           epochs=30, test_acc=80.0, seconds_per_epoch=1.0, eta_s=27, updated=NOW - 3600)  # silent for an hour


def test_the_report_has_one_line_per_job_running_first(tmp_path):
    _synthetic(tmp_path)
    lines = progress.report(progress.read_all(tmp_path), now=NOW).splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["train_student/mll/mll/resnet8/kd/full/seed0", "running"], ["train_teacher/resnet20.mcmi", "running"],
        ["train_student/none/none/resnet8/ce/full/seed2", "running?"],
        ["train_student/none/none/resnet8/ce/full/seed1", "interrupted"], ["train_teacher/resnet20.mll", "done"]]
    first = " ".join(lines[0].split())
    assert first == ("train_student/mll/mll/resnet8/kd/full/seed0 running epoch 12/30 acc 97.11 (best 97.50) "
                     "4.2s/epoch ETA 1m16s")
    assert "init epoch 1/5" in lines[1] and "acc –" in lines[1] and lines[1].endswith("ETA 1h01m")
    assert "ETA" not in lines[3] and "ETA" not in lines[4]
    assert lines[-1] == "2 running, 1 running?, 1 interrupted, 1 done"
    only = progress.report(progress.read_all(tmp_path), running_only=True, now=NOW).splitlines()
    assert len(only) == 4 and only[-1] == lines[-1]


def test_a_running_job_whose_process_is_gone_shows_as_killed():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    record = {"state": "running", "host": socket.gethostname(), "pid": int(gone), "updated": time.time()}
    assert progress.state_of(record) == "killed"
    assert progress.state_of({**record, "pid": os.getpid()}) == "running"


def test_the_command_finds_the_logs_of_a_config_or_a_results_folder(tmp_path, monkeypatch):
    logs = tmp_path / "logs" / "tiny"
    _synthetic(logs)
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("name: tiny\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    outputs = []
    for args in ([], ["config.yaml"], ["results/tiny"], ["logs/tiny"]):
        out = subprocess.run([sys.executable, "-m", "mcmikd.progress", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout)
    assert "tiny/train_teacher/resnet20.mll" in outputs[0]  # all runs under logs/
    assert outputs[1] == outputs[2] == outputs[3] and "\ntrain_teacher/resnet20.mll " in outputs[1]
    missing = subprocess.run([sys.executable, "-m", "mcmikd.progress", "logs/other"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "logs/other does not exist" in missing.stderr
