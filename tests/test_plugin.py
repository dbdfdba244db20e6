"""The worked example of docs/extending.md: a new framework is one class plus one registry line, and the whole pipeline
(pre-flight check, training job, checkpoints) picks it up."""

import sys
import textwrap
import types

import pytest
import torch

from mcmikd import distill
from mcmikd.datasets.digits import load_digits

PLUGIN = textwrap.dedent('''
    """Ba & Caruana (2014): the student regresses the teacher's logits."""
    import torch.nn.functional as F

    from mcmikd.distill.base import Distiller


    def logit_mse_loss(student_logits, teacher_logits):
        return F.mse_loss(student_logits, teacher_logits)


    class LogitMSE(Distiller):
        name = "logit_mse"
        defaults = {"gamma": 1.0, "beta": 1.0}

        def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
            logits = self.student(images)
            teacher_logits = self.teacher_logits(images)
            return logits, {"ce": self.ce_term(logits, targets),
                            "logit_mse": self.hp["beta"] * logit_mse_loss(logits, teacher_logits)}
''')


@pytest.fixture
def plugin(monkeypatch):
    module = types.ModuleType("logit_mse_plugin")
    exec(compile(PLUGIN, "logit_mse_plugin.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "logit_mse_plugin", module)
    monkeypatch.setitem(distill.METHODS, "logit_mse", "logit_mse_plugin:LogitMSE")  # the one registry line
    return module


def test_a_registered_plugin_trains_through_the_real_job(plugin, tmp_path):
    from mcmikd.jobs.student import train_student
    from mcmikd.jobs.teacher import train_teacher

    torch.set_num_threads(1)
    data = tmp_path / "data.pt"
    load_digits(image_size=8).to_file(data)
    runtime = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
    recipe = {"epochs": 1, "batch_size": 64, "lr": 0.05}
    teacher = {"arch": "resnet8", "objective": "mll", "variant": "mll", "hp": {}, "seed": 0, "recipe": recipe,
               "checkpoint": "last", "augment": {}, "runtime": runtime}
    train_teacher(str(data), teacher, str(tmp_path / "t.pt"), str(tmp_path / "t.json"))
    params = {"teacher": {"arch": "resnet8", "objective": "mll", "variant": "mll"}, "student": "resnet8",
              "method": "logit_mse", "hp": {"beta": 0.5}, "recipe": recipe, "setting": {}, "seed": 0,
              "augment": {}, "runtime": runtime}
    result = train_student(str(data), params, str(tmp_path / "s.json"), str(tmp_path / "t.pt"),
                                str(tmp_path / "t.json"))
    assert result["status"] == "ok" and set(result["history"][-1]["train"]) == {"ce", "logit_mse", "total"}
    assert result["extra_params"] == 0


def test_a_plugin_is_validated_like_the_built_in_methods(plugin, load):
    from mcmikd.checks import check_methods
    from mcmikd.errors import ConfigError

    def use(hp):
        def mutate(c):
            c["methods"]["logit_mse"] = hp
            c["experiments"]["main"]["methods"] = ["kd", "logit_mse"]
        return mutate

    assert check_methods(load(use({"beta": 2})), 10, 1, 16) >= 2
    with pytest.raises(ConfigError, match=r"config key 'methods.logit_mse': unknown key\(s\) \['betta'\]"):
        check_methods(load(use({"betta": 2})), 10, 1, 16)
