"""Training engine: schedules, determinism (same seed → same metrics), exact resume after an interruption,
teacher/student jobs end to end on a small slice of the digits data."""

import json

import pytest
import torch

from mcmikd.jobs import common, student, teacher as teacher_jobs
from mcmikd.datasets.digits import load_digits
from mcmikd.engine import Recipe

RUNTIME = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
RECIPE = {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "multistep", "milestones": [2], "gamma": 0.1}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.pt"
    load_digits(image_size=8, test_fraction=0.25, split_seed=0).to_file(path)
    return str(path)


@pytest.fixture(scope="module")
def teacher(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    params = {"arch": "resnet8", "objective": "mll", "variant": "mll", "hp": {}, "seed": 0, "recipe": RECIPE,
              "checkpoint": "last", "augment": {"crop_padding": 1, "hflip": False}, "runtime": RUNTIME}
    teacher_jobs.train_teacher(data_file, params, str(out / "model.pt"), str(out / "metrics.json"))
    return out


def test_schedules():
    step = Recipe(epochs=240, lr=0.05, milestones=[150, 180, 210])
    assert step.lr_at(150) == 0.05 and abs(step.lr_at(151) - 0.005) < 1e-12 and abs(step.lr_at(240) - 5e-5) < 1e-12
    cos = Recipe(epochs=20, lr=0.05, schedule="cosine")
    assert cos.lr_at(1) == 0.05 and cos.lr_at(11) == pytest.approx(0.025) and cos.lr_at(20) > 0


def test_teacher_learns_and_records_everything(teacher):
    m = json.loads((teacher / "metrics.json").read_text())
    assert m["last_acc"] > 50  # 3 short epochs on 8×8 digits already beat chance (10 %) by far
    assert len(m["confusion_last"]) == 10 and sum(map(sum, m["confusion_last"])) == 450
    assert m["provenance"]["seed"] == 0 and m["provenance"]["config"]["arch"] == "resnet8"
    assert {"torch", "python", "mcmikd"} <= set(m["provenance"]["versions"])
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]


def _student_params(method="kd", setting=None, seed=0, objective="mll"):
    return {"teacher": {"arch": "resnet8", "objective": objective, "variant": objective}, "student": "resnet8",
            "method": method, "hp": {"gamma": 0.1, "alpha": 0.9, "temperature": 4} if method == "kd" else {},
            "recipe": RECIPE, "setting": setting or {}, "seed": seed,
            "augment": {"crop_padding": 1, "hflip": False}, "runtime": RUNTIME}


def _student(data_file, teacher, tmp_path, name, **kw):
    out = tmp_path / f"{name}.json"
    return student.train_student(data_file, _student_params(**kw), str(out), str(teacher / "model.pt"),
                              str(teacher / "metrics.json"), resume_path=str(tmp_path / f".{name}.resume.pt"))


def _comparable(m):
    return {k: m[k] for k in ("best_acc", "last_acc", "per_class_acc_last", "confusion_last")} | {
        "losses": [h["train"] for h in m["history"]]}


def test_same_seed_gives_the_same_metrics_and_another_seed_does_not(data_file, teacher, tmp_path):
    a = _student(data_file, teacher, tmp_path, "a", seed=0)
    b = _student(data_file, teacher, tmp_path, "b", seed=0)
    c = _student(data_file, teacher, tmp_path, "c", seed=1)
    assert _comparable(a) == _comparable(b)
    assert _comparable(a)["losses"] != _comparable(c)["losses"]


def test_interrupted_run_resumes_to_exactly_the_same_metrics(data_file, teacher, tmp_path, monkeypatch):
    full = _student(data_file, teacher, tmp_path, "full", seed=3)
    real_evaluate = common.evaluate
    calls = {"n": 0}

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the process "dies" during epoch 2, after epoch 1's checkpoint was written
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(common, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        _student(data_file, teacher, tmp_path, "resumed", seed=3)
    assert (tmp_path / ".resumed.resume.pt").exists() and not (tmp_path / "resumed.json").exists()
    monkeypatch.setattr(common, "evaluate", real_evaluate)
    resumed = _student(data_file, teacher, tmp_path, "resumed", seed=3)
    assert _comparable(resumed) == _comparable(full)
    assert not (tmp_path / ".resumed.resume.pt").exists()  # cleared once the result is written


def test_collapsed_teacher_is_not_distilled_from(data_file, teacher, tmp_path):
    metrics = json.loads((teacher / "metrics.json").read_text())
    bad = tmp_path / "collapsed.json"
    bad.write_text(json.dumps({**metrics, "collapsed": True, "collapse_reason": "accuracy fell to chance"}))
    out = tmp_path / "s.json"
    result = student.train_student(data_file, _student_params(objective="mcmi"), str(out),
                                str(teacher / "model.pt"), str(bad))
    assert result["status"] == "skipped" and "collapsed teacher" in result["reason"]


def _finetune(data_file, teacher, out, objective, hp):
    params = {"arch": "resnet8", "objective": objective, "variant": objective, "hp": hp, "seed": 0,
              "recipe": {**RECIPE, "schedule": "cosine", "lr": 0.02}, "checkpoint": "last", "collapse_ratio": 0.5,
              "augment": {"crop_padding": 1, "hflip": False}, "runtime": RUNTIME}
    out.mkdir()
    return teacher_jobs.train_teacher(data_file, params, str(out / "model.pt"), str(out / "metrics.json"),
                                      start_model=str(teacher / "model.pt"), start_metrics=str(teacher / "metrics.json"))


def test_mcmi_finetune_raises_cmi(data_file, teacher, tmp_path):
    m = _finetune(data_file, teacher, tmp_path / "mcmi", "mcmi", {"lambda": 0.5, "centroids": "eval"})
    cmi = {}
    for name, path in (("mll", teacher / "model.pt"), ("mcmi", tmp_path / "mcmi" / "model.pt")):
        cmi[name] = teacher_jobs.measure_cmi(data_file, str(path), {"temperatures": [1.0], "runtime": RUNTIME},
                                             str(tmp_path / f"{name}_cmi.json"))["train"]["cmi"]["1.0"]
    assert cmi["mcmi"] > cmi["mll"]
    assert m["teacher"] == {"arch": "resnet8", "objective": "mcmi", "variant": "mcmi",
                            "hp": {"lambda": 0.5, "centroids": "eval"}}
    assert m["history"][0]["train"]["neg_cmi"] < 0 and m["start_acc"] is not None


def test_the_control_teacher_is_the_mcmi_fine_tuning_with_lambda_zero(data_file, teacher, tmp_path):
    """Same start model, recipe and seed: the ce_finetune control trains exactly as MCMI with λ = 0 would (whose
    −0·KL term adds nothing), so any difference between MCMI and the control is the CMI term's own."""
    control = _finetune(data_file, teacher, tmp_path / "control", "ce_finetune", {})
    zero = _finetune(data_file, teacher, tmp_path / "zero", "mcmi", {"lambda": 0.0, "centroids": "eval"})
    assert [h["train"]["ce"] for h in control["history"]] == [h["train"]["ce"] for h in zero["history"]]
    assert [h["test_acc"] for h in control["history"]] == [h["test_acc"] for h in zero["history"]]
    a = torch.load(tmp_path / "control" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "zero" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_few_shot_and_zero_shot_students_see_what_they_should(data_file, teacher, tmp_path):
    few = _student(data_file, teacher, tmp_path, "few",
                   setting={"fraction": 0.1, "subset": "first_n", "epoch_length": "full"})
    assert few["num_train_visible"] == 134
    zero = _student(data_file, teacher, tmp_path, "zero", setting={"omitted": [3]})
    assert zero["num_train_visible"] == 1347 - int((load_digits(8).train_labels == 3).sum())
