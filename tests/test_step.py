"""The training step: sync-free on the device and bit-identical on CPU to the engine before it was made so
(digests recorded with that engine, commit 7717401), and the `runtime.compile: graphs` path (static buffers; on
CPU the step runs eagerly on them) against the eager step, with exact resume.

Each case trains a tiny pair (resnet8 on 8×8 digits, a 300-image subset, batch 64) for a few epochs with a
multistep learning rate, a zero-shot class (batches of varying size) and a partial last batch."""

import hashlib

import pytest
import torch

from mcmikd.data import DatasetTensors
from mcmikd.datasets.digits import load_digits
from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fit

POOL = 300
RECIPE = {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "multistep", "milestones": [2], "gamma": 0.1}

# name -> (kind, method/objective, hp, omitted classes); digests from the engine before the sync-free step
CASES = {
    "mll": ("teacher", "mll", {}, ()),
    "mcmi_ema": ("teacher", "mcmi", {"centroids": "ema", "ema_decay": 0.9}, ()),
    "kd": ("student", "kd", {"gamma": 0.1, "alpha": 0.9}, (3,)),
    "crd": ("student", "crd", {"nce_k": 64, "feat_dim": 16}, (3,)),
    "ft": ("student", "ft", {"init_epochs": 1}, (3,)),
    "dkd": ("student", "dkd", {"warmup": 2}, ()),
}
GOLDEN = {
    "mll": "9188bf7050a9a3416d19",
    "mcmi_ema": "8039eeb87d5cff6e9471",
    "kd": "d02b00a6df22e5b6f535",
    "crd": "0064a6e7ced455d6079a",
    "ft": "5fd4cc9a9171b1ad526b",
    "dkd": "d257d58b045f43528a81",
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_DATA = {}


def _data() -> DatasetTensors:
    if "d" not in _DATA:
        _DATA["d"] = load_digits(image_size=8, test_fraction=0.25, split_seed=0)
    return _DATA["d"]


def _runtime(**kw) -> Runtime:
    return Runtime.from_config({"device": "cpu", "channels_last": False, "precision": "fp32",
                                "deterministic": True, **kw})


def _build(case: str, runtime: Runtime):
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.models import create_model, feature_shapes
    from mcmikd.teachers import get_objective

    kind, name, hp, omitted = CASES[case]
    data = _data()
    stream = TrainStream(data, runtime, pool=torch.arange(POOL), omitted=omitted, padding=1, hflip=False)
    torch.manual_seed(0)
    if kind == "teacher":
        cls = get_objective(name)
        objective = cls(cls.resolve_hp(hp, "resnet8"))
        model = runtime.prepare(create_model("resnet8", data.num_classes, data.in_channels))
        objective.bind(stream, runtime, data.num_classes)
        state = objective.prepare(model, stream, runtime, data.num_classes, 0)
        return objective.build(model, state), model, stream
    teacher = runtime.prepare(create_model("resnet8", data.num_classes, data.in_channels)).eval()
    shapes = feature_shapes("resnet8", data.num_classes, data.in_channels, data.image_size)
    ctx = DistillContext(num_classes=data.num_classes, num_train=stream.num_visible,
                         train_labels=stream.visible_labels, in_channels=data.in_channels,
                         image_size=data.image_size, epochs=RECIPE["epochs"], student_shapes=shapes,
                         teacher_shapes=shapes, student_arch="resnet8", teacher_arch="resnet8")
    student = create_model("resnet8", data.num_classes, data.in_channels)
    return runtime.prepare(get_method(name)(student, teacher, hp, ctx)), student, stream


def _train(case: str, runtime: Runtime | None = None, resume: ResumeFile | None = None, evaluator=None):
    runtime = runtime or _runtime()
    module, model, stream = _build(case, runtime)
    data = _data()
    ev = evaluator or (lambda: evaluate(model, data.test_images, data.test_labels, stream.normalize, runtime,
                                        data.num_classes))
    result = fit(module, stream, Recipe.from_dict(RECIPE), evaluator=ev, runtime=runtime, seed=0,
                 resume=resume or ResumeFile(None, ""))
    return result, module


def _comparable(result) -> list:
    keys = ("phase", "epoch", "lr", "train", "train_acc", "test_acc", "test_loss", "test_cmi")
    return [{k: h[k] for k in keys if k in h} for h in result.history] + [result.last["confusion"],
                                                                           result.last["per_class_acc"]]


def _digest(result, module) -> str:
    h = hashlib.sha256(repr(_comparable(result)).encode())
    for k, v in sorted(module.checkpoint_state().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@pytest.mark.parametrize("case", list(CASES))
def test_the_step_is_bit_identical_to_the_engine_before_it_was_sync_free(case):
    assert _digest(*_train(case)) == GOLDEN[case]


if __name__ == "__main__":  # print the digests (how GOLDEN was recorded)
    torch.set_num_threads(1)
    for case in CASES:
        print(f'    "{case}": "{_digest(*_train(case))}",')
