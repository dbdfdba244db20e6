"""Teacher objectives as plug-ins: the registry, what each objective declares, and that the loss training runs is
the pure loss function the tests check."""

import subprocess
import sys

import pytest
import torch

from mcmikd.errors import ConfigError
from mcmikd.teachers import OBJECTIVES, get_objective
from mcmikd.teachers.mcmi import mcmi_loss
from mcmikd.teachers.mll import ce_loss

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric


def test_registry_names_and_start_points():
    assert list(OBJECTIVES) == ["mll", "mcmi", "ce_finetune"]
    assert get_objective("mll").start_from is None
    assert get_objective("mcmi").start_from == "mll" and get_objective("ce_finetune").start_from == "mll"
    with pytest.raises(ConfigError, match="unknown teacher objective 'mlll'; choose one of: mll, mcmi"):
        get_objective("mlll")


def test_reading_the_objectives_does_not_import_torch():
    code = ("import sys; from mcmikd.teachers import OBJECTIVES, get_objective; "
            "[get_objective(n).variant(get_objective(n).resolve_hp({}, 'resnet8')) for n in OBJECTIVES]; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_variants_name_the_result_folders():
    mcmi = get_objective("mcmi")
    hp = mcmi.resolve_hp({"lambda": 0.25, "lambda_per_teacher": {"resnet56": 0.15}}, "resnet56")
    assert hp == {"lambda": 0.15, "centroids": "eval"} and mcmi.variant(hp) == "mcmi-0.15"
    assert mcmi.variant(mcmi.resolve_hp({}, "resnet20")) == "mcmi-0.25"
    assert mcmi.describe(hp) == "MCMI (λ=0.15)"
    assert get_objective("ce_finetune").variant({}) == "ce_finetune" and get_objective("mll").variant({}) == "mll"


@pytest.mark.parametrize("hp, message", [
    ({"lamda": 0.2}, "unknown key(s) ['lamda'] for teacher objective 'mcmi'"),
    ({"lambda": -0.2}, "'teachers.hp.mcmi.lambda': -0.2 is not a positive number"),
    ({"lambda_per_teacher": {"resnet8": 0}}, "lambda_per_teacher.resnet8': 0 is not a positive number"),
    ({"centroids": "train"}, "'teachers.hp.mcmi.centroids': 'train' is not allowed"),
])
def test_bad_hyper_parameters_give_one_line(hp, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        get_objective("mcmi").check_hp(hp, "teachers.hp.mcmi")


def _module(name, hp, state):
    from mcmikd.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", 4, 1)
    objective = get_objective(name)(hp)
    return objective.build(model, state), model


@pytest.mark.parametrize("name, hp", [("mll", {}), ("ce_finetune", {}),
                                      ("mcmi", {"lambda": 0.3, "centroids": "eval"})])
def test_training_runs_the_declared_pure_loss(name, hp):
    """The terms the engine sums are exactly the objective's pure loss of the model's logits."""
    centroids = torch.softmax(torch.randn(4, 4), 1)
    state = {"centroids": centroids} if name == "mcmi" else {}
    module, model = _module(name, hp, state)
    images, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    model.eval()  # no BatchNorm statistics updates between the two forward passes
    module.eval()
    logits, terms = module.forward_train(images, labels, epoch=1)
    expected = mcmi_loss(model(images), labels, centroids, 0.3) if name == "mcmi" else ce_loss(model(images), labels)
    assert list(terms) == list(expected)
    for key in terms:
        assert torch.equal(terms[key], expected[key])


def test_mcmi_terms_sum_to_ce_minus_lambda_kl():
    torch.manual_seed(1)
    logits, labels = torch.randn(8, 4), torch.arange(8) % 4
    q = torch.softmax(torch.randn(4, 4), 1)
    terms = mcmi_loss(logits, labels, q, 0.25)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    from mcmikd.cmi import kl_to_centroids

    kl = kl_to_centroids(torch.softmax(logits, 1), labels, q).mean()
    assert torch.allclose(terms["ce"], ce) and torch.allclose(terms["neg_cmi"], -0.25 * kl)


def test_ema_centroids_follow_the_batches():
    centroids = torch.full((4, 4), 0.25)
    module, model = _module("mcmi", {"lambda": 0.1, "centroids": "ema", "ema_decay": 0.5}, {"centroids": centroids})
    images, labels = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    module.train()
    module.forward_train(images, labels, epoch=1)
    assert not torch.equal(module.centroids, centroids)  # moved towards the batch means
    assert torch.allclose(module.centroids.sum(1), torch.ones(4))
