"""The training step: sync-free on the device and numerically the engine before it was made so (its numbers recorded
with that engine, commit 7717401: bit for bit on the recording machine's CPU kernels, within the kernel-drift
tolerance elsewhere, `tests/pins.py`), and the `runtime.compile: graphs` path (static buffers; on CPU the step runs
eagerly on them) bit for bit against the eager step on this machine, with exact resume.

Each case trains a tiny pair (resnet8 on 8×8 digits, a 300-image subset, batch 64) for a few epochs with a
multistep learning rate, a zero-shot class (batches of varying size) and a partial last batch."""

import hashlib

import pytest
import torch

import pins
from mcmikd.data import DatasetTensors
from mcmikd.datasets.digits import load_digits
from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fit

# training numbers: run again under another CPU kernel set by `make test-kernels`
pytestmark = pytest.mark.numeric

POOL = 300
RECIPE = {"epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "multistep", "milestones": [2], "gamma": 0.1}

# name -> (kind, method/objective, hp, omitted classes); recorded (tests/recorded/step.json) with the engine before
# the sync-free step
CASES = {
    "mll": ("teacher", "mll", {}, ()),
    "mcmi_ema": ("teacher", "mcmi", {"centroids": "ema", "ema_decay": 0.9}, ()),
    "kd": ("student", "kd", {"gamma": 0.1, "alpha": 0.9}, (3,)),
    "crd": ("student", "crd", {"nce_k": 64, "feat_dim": 16}, (3,)),
    "ft": ("student", "ft", {"init_epochs": 1}, (3,)),
    "dkd": ("student", "dkd", {"warmup": 2}, ()),
}
@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file trains with one torch thread (conftest.one_torch_thread)."""


_DATA = {}


def _data() -> DatasetTensors:
    if "d" not in _DATA:
        _DATA["d"] = load_digits(image_size=8, test_fraction=0.25, split_seed=0)
    return _DATA["d"]


def _runtime(**kw) -> Runtime:
    return Runtime.from_config({"device": "cpu", "channels_last": False, "precision": "fp32",
                                "deterministic": True, **kw})


def _build(case: str, runtime: Runtime, seed: int = 0):
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.models import create_model, feature_shapes
    from mcmikd.teachers import get_objective

    kind, name, hp, omitted = CASES[case]
    data = _data()
    stream = TrainStream(data, runtime, pool=torch.arange(POOL), omitted=omitted, padding=1, hflip=False)
    torch.manual_seed(seed)
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


def _train(case: str, runtime: Runtime | None = None, resume: ResumeFile | None = None, evaluator=None,
           seed: int = 0):
    runtime = runtime or _runtime()
    module, model, stream = _build(case, runtime, seed)
    data = _data()
    ev = evaluator or (lambda: evaluate(model, data.test_images, data.test_labels, stream.normalize, runtime,
                                        data.num_classes))
    result = fit(module, stream, Recipe.from_dict(RECIPE), evaluator=ev, runtime=runtime, seed=seed,
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


def pinned(case: str, seed: int = 0) -> tuple[list[dict], str]:
    """(history, digest) of a case's run: what tests/recorded/step.json holds (`tests/pins.py`)."""
    result, module = _train(case, seed=seed)
    return result.history, _digest(result, module)


@pytest.mark.parametrize("case", list(CASES))
def test_the_step_gives_the_numbers_of_the_engine_before_it_was_sync_free(case):
    pins.check("step", case, *pinned(case))


# ------------------------------------------------------------------------------------------------ runtime.compile
@pytest.mark.parametrize("case", list(CASES))
def test_graphs_on_cpu_run_the_static_buffer_step_and_give_the_eager_numbers(case, monkeypatch):
    from mcmikd import step

    eager = _digest(*_train(case))
    made = []
    real = step.StepRunner.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(step.StepRunner, "__init__", spy)
    runtime = _runtime(compile="graphs")
    assert runtime.compile == "graphs"
    # static buffers on CPU: the same step on copies of the batch, so exactly the eager numbers, not just close
    assert _digest(*_train(case, runtime)) == eager
    # the static-buffer path really ran: buffers for the full batch and the shapes that recur (zero-shot)
    assert all(r.static and not r.capture for r in made) and sum(r.captures for r in made) >= 1


def test_graphs_key_drops_buffers_when_the_lr_or_the_step_key_changes():
    from mcmikd import step
    from mcmikd.step import StepRunner

    runtime = _runtime(compile="graphs")
    module, _, stream = _build("dkd", runtime)
    opt = torch.optim.SGD(module.learnable_parameters(), lr=0.1, momentum=0.9)
    runner = StepRunner(module, opt, runtime, mode="graphs")
    gen = torch.Generator().manual_seed(0)
    keys = []
    for epoch, lr in [(1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1), (5, 0.01)]:  # dkd warmup 2: weight 0.5 then 1
        opt.param_groups[0]["lr"] = lr
        runner.start_epoch(epoch)
        for batch in stream.batches(gen, 64):
            runner.step(*batch, gen)
        keys.append((runner.key, len(runner.buffers)))
        means, acc = runner.end_epoch()
        assert set(means) == {"ce", "dkd", "total"} and 0 <= acc <= 100
    assert [k for k, _ in keys] == [((0.1,), 0.5)] + [((0.1,), 1.0)] * 3 + [((0.01,), 1.0)]
    # 300 images: four batches of 64 and one of 44 per epoch; a shape gets buffers once seen more than
    # WARMUP_STEPS (2) times, counted over every key: the 64s in the first epoch, the 44 in the 3rd; a new key
    # drops the buffers, and the shapes already seen that often get new ones at once (the 44 too, at lr 0.01)
    assert [n for _, n in keys] == [1, 1, 2, 2, 2]
    # every step counted by how it ran: 2 warm-up steps per shape, the rest on static buffers (CPU)
    assert runner.stats() == {"graph_replays": 0, "eager_steps": 25, "capture_failed": None,
                              "eager_why": {step.EAGER_WARMUP: 4, step.STATIC: 21}}


def test_compile_config_values():
    assert _runtime().compile == "none"
    assert _runtime(compile="auto").compile == "none"  # auto = graphs on CUDA only; CPU stays eager
    assert _runtime(compile="graphs").compile == "graphs"  # on CPU: static buffers, eager (no capture)
    from mcmikd.errors import ConfigError

    with pytest.raises(ConfigError, match="runtime.compile"):
        _runtime(compile="max-autotune")


def test_compile_enters_the_job_params_only_when_set():
    """Its default `none` is the engine as before: existing results keep their params (nothing reruns)."""
    from pathlib import Path

    import yaml

    from mcmikd.config import load_grid

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    config = yaml.safe_load((root / "tests" / "tiny.yaml").read_text())
    assert "compile" not in load_grid(config, schema).runtime()
    config["runtime"] = {**config.get("runtime", {}), "compile": "graphs"}
    assert load_grid(config, schema).runtime()["compile"] == "graphs"
    from mcmikd.errors import ConfigError

    config["runtime"]["compile"] = "reduce-overhead"
    with pytest.raises(ConfigError, match="compile"):
        load_grid(config, schema)


def test_graphs_resume_exactly_after_an_interruption(tmp_path):
    runtime = _runtime(compile="graphs")
    full = _digest(*_train("crd", runtime))
    calls = {"n": 0}
    data = _data()

    def dying(model, stream):
        def ev():
            calls["n"] += 1
            if calls["n"] == 2:  # killed during epoch 2, after epoch 1's checkpoint
                raise KeyboardInterrupt
            return evaluate(model, data.test_images, data.test_labels, stream.normalize, runtime, data.num_classes)
        return ev

    resume = ResumeFile(tmp_path / "r.pt", "crd")
    module, model, stream = _build("crd", runtime)
    with pytest.raises(KeyboardInterrupt):
        fit(module, stream, Recipe.from_dict(RECIPE), evaluator=dying(model, stream), runtime=runtime, seed=0,
            resume=resume)
    assert (tmp_path / "r.pt").exists()
    assert _digest(*_train("crd", runtime, resume=resume)) == full
    assert full == _digest(*_train("crd"))  # and the eager run's bits


def test_every_method_that_reads_epoch_in_its_step_declares_a_step_key():
    """A captured step bakes in Python numbers: a method whose forward_train uses `epoch` must key its graphs."""
    import inspect

    from mcmikd.distill import METHODS, get_method
    from mcmikd.distill.base import Distiller

    for name in METHODS:
        cls = get_method(name)
        body = inspect.getsource(cls.forward_train).split(":", 1)[1].split(")", 1)[1]  # after the signature
        if "epoch" in body:
            assert cls.step_key is not Distiller.step_key, f"{name} uses epoch in forward_train but has no step_key"
