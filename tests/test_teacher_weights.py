"""MLL teachers loaded from weight files (`teachers.weights`) instead of trained:

* the config names each file per architecture (one file for every seed, or a file per seed); a missing file, a seed
  that is not a teacher seed or an unknown architecture is refused in one line before any job (a dry run sees it);
* a loaded teacher's job parameters are the file and its sha256 (no recipe): another file reruns the teacher, a
  change to the training recipe does not; the seeds not listed, stopped `mll-e<k>` teachers and fine-tuned teachers
  keep their parameters;
* the job loads a teacher this workflow trained to the same bits, and measures the same test accuracy and
  per-class accuracy (same data, same machine); it loads a plain state dict (released weights) too; it refuses, in
  one line, a file that changed after planning, another architecture or class count, and a file that is not a
  state dict. Files are read with `weights_only=True` (a pickle that would run code is refused)."""

import json

import pytest
import torch

from conftest import random_dataset
from mcmikd.errors import ConfigError, DataError

# loading is compared with training on the same machine: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric

RUNTIME = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
RECIPE = {"epochs": 2, "batch_size": 10, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "multistep",
          "milestones": [1], "gamma": 0.1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset (4 classes, 8 px) and a resnet8 MLL teacher trained on it for 2 epochs."""
    from mcmikd.jobs.teacher import train_teacher

    folder = tmp_path_factory.mktemp("weights")
    random_dataset(40).to_file(folder / "data.pt")
    params = {"arch": "resnet8", "objective": "mll", "variant": "mll", "hp": {}, "seed": 0, "recipe": RECIPE,
              "checkpoint": "last", "augment": {"crop_padding": 1, "hflip": False}, "runtime": RUNTIME}
    metrics = train_teacher(str(folder / "data.pt"), params, str(folder / "trained.pt"), str(folder / "trained.json"),
                            threads=1)
    return folder, metrics


def _import(folder, weights, name, arch="resnet8", sha=None):
    from mcmikd.io import sha256_file
    from mcmikd.jobs.teacher import import_teacher

    params = {"arch": arch, "objective": "mll", "variant": "mll", "hp": {}, "seed": 0, "runtime": RUNTIME,
              "weights": {"path": str(weights), "sha256": sha or sha256_file(weights)}}
    return import_teacher(str(folder / "data.pt"), params, str(weights), str(folder / f"{name}.pt"),
                          str(folder / f"{name}.json"), threads=1)


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_a_teacher_this_workflow_trained_loads_to_the_same_bits_and_accuracy(trained):
    folder, metrics = trained
    loaded = _import(folder, folder / "trained.pt", "loaded")
    before, after = _state(folder / "trained.pt"), _state(folder / "loaded.pt")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert loaded["model_acc"] == metrics["model_acc"] and loaded["last_acc"] == metrics["last_acc"]
    assert loaded["per_class_acc_last"] == metrics["per_class_acc_last"]
    assert loaded["history"] == [] and loaded["collapsed"] is False
    source = loaded["imported"]["source"]
    assert source["arch"] == "resnet8" and source["epoch"] == 2 and source["test_acc"] == metrics["model_acc"]
    written = json.loads((folder / "loaded.json").read_text())
    assert written["imported"]["sha256"] == loaded["imported"]["sha256"]
    assert written["provenance"]["config"]["weights"]["path"] == str(folder / "trained.pt")


def test_a_plain_state_dict_loads_as_released_weights_do(trained):
    folder, metrics = trained
    torch.save(_state(folder / "trained.pt"), folder / "plain.pth")
    loaded = _import(folder, folder / "plain.pth", "plain")
    assert loaded["model_acc"] == metrics["model_acc"] and loaded["imported"]["source"] == {}


def test_a_file_changed_after_planning_is_refused(trained):
    folder, _ = trained
    with pytest.raises(DataError, match="changed since the run was planned"):
        _import(folder, folder / "trained.pt", "changed", sha="0" * 64)


def test_another_architecture_or_a_file_that_is_no_state_dict_is_refused_in_one_line(trained):
    folder, _ = trained
    with pytest.raises(ConfigError, match="is a resnet8 of 4 classes and 1 input channels; teachers.weights.resnet20 "
                                          "needs a resnet20"):
        _import(folder, folder / "trained.pt", "other", arch="resnet20")
    torch.save(_state(folder / "trained.pt"), folder / "plain.pth")
    with pytest.raises(ConfigError, match="does not fit a resnet20 of 4 classes"):
        _import(folder, folder / "plain.pth", "other", arch="resnet20")
    torch.save([1, 2, 3], folder / "list.pt")
    with pytest.raises(DataError, match="holds a list, not a state dict"):
        _import(folder, folder / "list.pt", "list")


class _RunsCode:
    def __reduce__(self):  # unpickling this would call print: weights_only refuses it
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_refused(trained):
    folder, _ = trained
    torch.save({"state_dict": _RunsCode()}, folder / "evil.pt")
    with pytest.raises(DataError, match="evil.pt is unreadable"):
        _import(folder, folder / "evil.pt", "evil")


# ------------------------------------------------------------------------------------------------- the config
def _weights(tmp_path, spec):
    def mutate(c):
        c["teachers"]["seeds"] = [0, 1, 2]
        c["teachers"]["weights"] = spec
    return mutate


def test_the_job_parameters_of_a_loaded_teacher_are_the_file_and_its_sha256(load, tmp_path, monkeypatch):
    from mcmikd.io import sha256_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t0.pt").write_bytes(b"weights of seed 0")
    grid = load(_weights(tmp_path, {"resnet20": {0: "t0.pt"}}))
    params = grid.teacher_params("resnet20", "mll", 0)
    assert params["weights"] == {"path": "t0.pt", "sha256": sha256_file(tmp_path / "t0.pt")}
    assert "recipe" not in params and grid.teacher_weights("resnet20", "mll", 0) == "t0.pt"
    assert "weights" not in grid.teacher_params("resnet20", "mll", 1)  # seed 1 is not listed: trained
    trained_before = grid.teacher_params("resnet20", "mll", 1)
    assert trained_before == load(_weights(tmp_path, {})).teacher_params("resnet20", "mll", 1)
    fine_tuned = [v for (a, v), (o, _) in grid.variants.items() if a == "resnet20" and o != "mll"]
    assert fine_tuned and all("weights" not in grid.teacher_params("resnet20", v, 0) for v in fine_tuned)
    (tmp_path / "t0.pt").write_bytes(b"other weights")  # another file: another fingerprint (the teacher reruns)
    assert load(_weights(tmp_path, {"resnet20": {0: "t0.pt"}})).teacher_params("resnet20", "mll", 0) != params


def test_one_file_serves_every_seed(load, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "released.pth").write_bytes(b"released")
    grid = load(_weights(tmp_path, {"resnet20": "released.pth"}))
    assert {grid.teacher_weights("resnet20", "mll", s) for s in (0, 1, 2)} == {"released.pth"}


@pytest.mark.parametrize("spec, message", [
    ({"resnet20": "absent.pt"}, "config key 'teachers.weights.resnet20': weights file absent.pt not found"),
    ({"resnet20": {5: "here.pt"}},
     "config key 'teachers.weights.resnet20.5': 5 is not one of teachers.seeds [0, 1, 2]"),
    ({"resnet99": "here.pt"}, "config key 'teachers.weights.resnet99': unknown model 'resnet99'"),
    ({"resnet56": "here.pt"}, "config key 'teachers.weights.resnet56': no experiment has a resnet56 teacher"),
])
def test_bad_weights_are_refused_in_one_line(load, tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.pt").write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        load(_weights(tmp_path, spec))
    assert message in str(err.value) and "\n" not in str(err.value)
