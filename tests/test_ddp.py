"""Multi-process training jobs (`runtime.processes`, mcmikd.distributed), on CPU with gloo and 2 processes:

* a 2-process teacher and a 2-process KD student equal the 1-process runs of the same global batch: weights within
  atol 1e-5, every epoch's training losses within rel 1e-5, test accuracy, per-class accuracy and confusion equal
  (the global batch's BatchNorm statistics and the N·n_r/B loss weights make them the same sums in another order);
  the global batch (19 of 40 images) does not divide by 2, so the full batches have unequal slices (10 + 9), the
  teacher's last batch of 2 has one image per process and the student's is merged (`last_batch: merge`: 21);
* a 2-process run killed after its first epoch's checkpoint and run again ends exactly (bit for bit) like an
  uninterrupted 2-process run; only rank 0 wrote the checkpoint and the results;
* what several processes cannot run is refused before any job, in one line.

All 2-process runs share one spawned process group: starting 2 processes costs seconds (about 15 s on the shared
2-core test machine under load), and the runs about 40 s in all there, hence `slow` on the tests that use them."""

import json

import pytest
import torch

from conftest import random_dataset
from mcmikd import distributed
from mcmikd.errors import ConfigError

RUNTIME = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
RECIPE = {"epochs": 2, "batch_size": 19, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "multistep",
          "milestones": [1], "gamma": 0.1}
AUGMENT = {"crop_padding": 1, "hflip": False}
ATOL = 1e-5


def _teacher_params(processes: int, seed: int = 0) -> dict:
    return {"arch": "resnet8", "objective": "mll", "variant": "mll", "hp": {}, "seed": seed, "recipe": RECIPE,
            "checkpoint": "last", "augment": AUGMENT, "runtime": {**RUNTIME, "processes": processes}}


def _student_params(processes: int) -> dict:
    return {"teacher": {"arch": "resnet8", "objective": "mll", "variant": "mll", "seed": 0}, "student": "resnet8",
            "method": "kd", "hp": {"gamma": 0.1, "alpha": 0.9, "temperature": 4},
            "recipe": {**RECIPE, "epochs": 1, "last_batch": "merge"}, "setting": {}, "seed": 0, "augment": AUGMENT,
            "runtime": {**RUNTIME, "processes": processes}}


def _teacher(folder, name, processes, seed=0):
    from mcmikd.jobs.teacher import train_teacher

    return train_teacher(str(folder / "data.pt"), _teacher_params(processes, seed), str(folder / f"{name}.pt"),
                         str(folder / f"{name}.json"), resume_path=str(folder / f".{name}.resume.pt"), threads=2)


def _student(folder, name, processes):
    from mcmikd.jobs.student import train_student

    return train_student(str(folder / "data.pt"), _student_params(processes), str(folder / f"{name}.json"),
                         str(folder / "t1.pt"), str(folder / "t1.json"),
                         resume_path=str(folder / f".{name}.resume.pt"), threads=2)


class _Killed(Exception):
    """Stands for the job's death after its first epoch's checkpoint."""


def _two_process_runs(folder) -> dict:
    """Run in each of the 2 ranks (`distributed.launch`): a teacher, a KD student, and the same teacher killed after
    epoch 1 then run again (resumed from its checkpoint). Returns what rank 0 saw."""
    from mcmikd import engine

    out = {"teacher": _teacher(folder, "t2", 2), "student": _student(folder, "s2", 2)}
    real, calls = engine._epoch_pass, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # as epoch 2 starts, after epoch 1's checkpoint (every rank at the same point)
            raise _Killed
        return real(*args, **kwargs)

    engine._epoch_pass = dying
    try:
        try:
            _teacher(folder, "k2", 2)
        except _Killed:
            out["left_after_kill"] = sorted(p.name for p in folder.iterdir() if p.name.startswith((".k2", "k2")))
        calls["n"] = 2  # from here on every pass runs, counted
        out["resumed"] = _teacher(folder, "k2", 2)
    finally:
        engine._epoch_pass = real
    out["passes_after_resume"] = calls["n"] - 2
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread_module):
    folder = tmp_path_factory.mktemp("ddp")
    random_dataset(40).to_file(folder / "data.pt")
    one = {"teacher": _teacher(folder, "t1", 1), "student": _student(folder, "s1", 1)}
    two = distributed.launch(_two_process_runs, {"folder": folder}, 2, "cpu")
    return folder, one, two


@pytest.fixture(scope="module")
def one_torch_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_within_tolerance(a: dict, b: dict) -> None:
    for key in ("last_acc", "best_acc", "per_class_acc_last", "confusion_last"):
        assert a[key] == b[key], key
    assert [h["epoch"] for h in a["history"]] == [h["epoch"] for h in b["history"]]
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["train"].keys() == hb["train"].keys()
        for term in ha["train"]:
            assert ha["train"][term] == pytest.approx(hb["train"][term], rel=ATOL), term
        assert ha["train_acc"] == hb["train_acc"]


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("role, one_file, two_file", [("teacher", "t1.pt", "t2.pt"), ("student", None, None)])
def test_two_processes_equal_one_with_the_same_global_batch(runs, role, one_file, two_file):
    folder, one, two = runs
    _same_within_tolerance(one[role], two[role])
    assert two[role]["provenance"]["config"]["runtime"]["processes"] == 2
    if one_file:  # the teacher's weights, BatchNorm running statistics included
        a, b = _weights(folder / one_file), _weights(folder / two_file)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].double(), b[key].double(), atol=ATOL, rtol=0), key
        assert any(not torch.equal(a[k], b[k]) for k in a)  # another order of the same sums: not bit-identical


@pytest.mark.slow
def test_rank_zero_writes_the_results(runs):
    folder, _, two = runs
    assert json.loads((folder / "t2.json").read_text())["last_acc"] == two["teacher"]["last_acc"]
    assert json.loads((folder / "s2.json").read_text())["history"] == two["student"]["history"]
    assert not (folder / ".t2.resume.pt").exists() and not (folder / ".s2.resume.pt").exists()


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_exactly_the_uninterrupted_result(runs):
    folder, _, two = runs
    assert two["left_after_kill"] == [".k2.resume.pt"]  # its checkpoint, no result
    assert two["passes_after_resume"] == 1  # resumed: only epoch 2 was trained again
    resumed, full = two["resumed"], two["teacher"]
    keep = ("last_acc", "best_acc", "per_class_acc_last", "confusion_last", "test_cmi_last")
    assert {k: resumed[k] for k in keep} == {k: full[k] for k in keep}
    assert [{**h, "seconds": 0} for h in resumed["history"]] == [{**h, "seconds": 0} for h in full["history"]]
    a, b = _weights(folder / "k2.pt"), _weights(folder / "t2.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batches_are_cut_into_contiguous_slices():
    assert [distributed.shard_bounds(13, r, 2) for r in range(2)] == [(0, 7), (7, 13)]
    assert [distributed.shard_bounds(8, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 8)]
    with pytest.raises(ConfigError, match="batch of 2 images cannot be split over runtime.processes = 3"):
        distributed.shard_bounds(2, 0, 3)


def _two(c, methods=("kd",), **runtime):
    """Two processes per training job, the main experiment alone, with `methods`."""
    c["runtime"].update(processes=2, **runtime)
    for name, body in c["experiments"].items():
        if name != "main":
            body["enabled"] = False
    c["experiments"]["main"]["methods"] = list(methods)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: _two(c, methods=["kd", "crd"]), "method 'crd' cannot train as 2 processes"),
    (lambda c: (_two(c), c["students"]["training"].update(batch_size=1)),
     "'students.training.batch_size': 1 cannot be split over runtime.processes = 2"),
    (lambda c: _two(c, compile="graphs"), "'runtime.compile': graphs cannot run with runtime.processes = 2"),
    (lambda c: (_two(c), c["teachers"]["hp"]["mcmi"].update(centroids="ema")), "'mcmi'.*'ema' centroids"),
])
def test_what_several_processes_cannot_run_is_refused_in_one_line(load, mutate, message):
    with pytest.raises(ConfigError, match=message) as err:
        load(mutate)
    assert "\n" not in str(err.value)


def test_one_process_leaves_the_jobs_parameters_as_they_were(load):
    grid = load()
    assert "processes" not in grid.teacher_params(*grid.teacher_jobs()[0])["runtime"]
    two = load(_two)
    assert two.teacher_params(*two.teacher_jobs()[0])["runtime"]["processes"] == 2
    assert "processes" not in two.cmi_params()["runtime"]  # only the training jobs run as several processes


def _fails_on_rank_one() -> None:
    import torch.distributed as dist

    from mcmikd.errors import DataError

    if distributed.rank() == 1:
        raise DataError("prepared dataset data.pt is missing; rerun the workflow to rebuild it")
    dist.barrier()  # rank 0 waits for rank 1 until torch.multiprocessing stops it


@pytest.mark.slow
def test_a_user_error_in_any_process_stops_the_job_with_its_one_line():
    from mcmikd.errors import DataError

    with pytest.raises(DataError, match="^prepared dataset data.pt is missing; rerun the workflow to rebuild it$"):
        distributed.launch(_fails_on_rank_one, {}, 2, "cpu")


@pytest.mark.parametrize("length, size, last_batch, smallest", [
    (40, 19, "keep", 2), (40, 19, "merge", 19), (39, 19, "keep", 19), (38, 19, "keep", 19), (12, 19, "keep", 12),
    (48, 19, "merge", 10),
])
def test_the_smallest_batch_is_known_before_training(length, size, last_batch, smallest):
    """What a job with several processes checks before its first step (each process needs one image of it)."""
    from types import SimpleNamespace

    from mcmikd.engine import Recipe, smallest_batch

    stream = SimpleNamespace(omitted=(), epoch_length=length)
    assert smallest_batch(stream, Recipe(epochs=1, batch_size=size, last_batch=last_batch)) == smallest
    assert smallest_batch(SimpleNamespace(omitted=(3,), epoch_length=length), Recipe(epochs=1)) is None


def _gradients_of(arch: str) -> dict:
    """Float64 parameter gradients of `arch` (3 classes, 32 px, train mode) for one fixed loss over a global batch of
    5 images; in a process group each rank takes its slice, BatchNorm is synchronised and the gradients summed."""
    import torch.distributed as dist

    from mcmikd.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, 3, 3).train().double()
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    start, stop = 0, 5
    if distributed.world_size() > 1:
        distributed.sync_batchnorm(model)
        start, stop = distributed.shard_bounds(5, distributed.rank(), distributed.world_size())
    ((model(x[start:stop]) * w[start:stop]).sum() / 5).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    if distributed.world_size() > 1:
        for g in grads.values():
            dist.all_reduce(g)
    return grads


def _gradients_of_both() -> dict:
    return {arch: _gradients_of(arch) for arch in ("MobileNetV1", "resnet18")}


@pytest.mark.slow
def test_the_imagenet_models_global_batchnorm_gives_the_one_process_gradients(one_torch_thread_module):
    """torchvision's ResNet-18 and MobileNetV1 with their BatchNorm layers synchronised over 2 processes (3 + 2
    images) get the gradients of the 1-process global batch, to 1e-9 of the largest one in float64 (in float32 their
    1 × 1 final maps at 32 px amplify rounding to about 1 %: mcmikd.distributed.CpuSyncBatchNorm)."""
    two = distributed.launch(_gradients_of_both, {}, 2, "cpu")
    for arch, grads in two.items():
        one = _gradients_of(arch)
        scale = max(g.abs().max().item() for g in one.values())
        for name, g in one.items():
            assert (grads[name] - g).abs().max().item() <= 1e-9 * scale, (arch, name)
