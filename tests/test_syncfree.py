"""The training step never syncs with the host, for every method and teacher objective, in both runtimes; the sync
detector that guarantees it finds what it should; a step that syncs is never captured (an error under an explicit
`compile: graphs`, a recorded fallback under `auto`); the captured step's Python constants are keyed.

What a CPU can see of the CUDA-graph step (`mcmikd.step`, `mcmikd.syncguard`): the ops each step runs, and what the
runner does when one of them would sync. Whether the capture itself works needs a GPU (`bench/gpu_check.sh`)."""

import copy

import pytest
import torch

import test_distill as td
import test_step as ts
from mcmikd.distill import METHODS
from mcmikd.syncguard import SyncGuard, order_independent

RUNTIMES = {"paper": True, "fast": False}  # name -> deterministic (the paper runtime is; the fast one is not)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread (conftest.one_torch_thread)."""


def _guarded_steps(d, deterministic: bool, steps: int = 2) -> list:
    """Two optimizer steps of method `d` (SGD with momentum and weight decay, as the recipes), and one of its init
    stage if it has one, under SyncGuard; the syncing ops found."""
    x, y, idx = td._batch()
    gen = torch.Generator().manual_seed(0)
    d.train()
    guard = SyncGuard(deterministic)
    init = d.init_stage()
    if init is not None:
        opt = torch.optim.SGD(init.parameters, lr=0.01, momentum=0.9, weight_decay=5e-4)
        with guard:
            loss = sum(init.loss(x, y).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt = torch.optim.SGD(d.learnable_parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    for _ in range(steps):
        extra = d.step_inputs(y, idx, gen) if hasattr(d, "step_inputs") else {}  # drawn outside the graph
        with guard:
            _, terms = d.forward_train(x, y, epoch=3, indices=idx, generator=None, **extra)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return guard.found


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("method", list(METHODS))
def test_no_method_step_syncs_with_the_host(method, runtime):
    d = td._build(method, *td.CROSS_PAIR.get(method, td.SAME_PAIR))
    assert _guarded_steps(d, RUNTIMES[runtime]) == []


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("case, hp", [("mll", {}), ("mcmi_ema", {"centroids": "ema", "ema_decay": 0.9}),
                                      ("mcmi_ema", {"centroids": "eval"}), ("mcmi_ema", {"centroids": "per_epoch"}),
                                      ("ce_finetune", {})])
def test_no_teacher_objective_step_syncs_with_the_host(case, hp, runtime, monkeypatch):
    """Through the runner itself (graphs mode, strict): its guarded warm-up step would raise on a sync."""
    from mcmikd.step import StepRunner

    cases = dict(ts.CASES, ce_finetune=("teacher", "ce_finetune", {}, ()))
    kind, name, _, omitted = cases[case]
    monkeypatch.setitem(ts.CASES, case, (kind, name, hp, omitted))
    rt = ts._runtime(compile="graphs", deterministic=RUNTIMES[runtime])
    module, _, stream = ts._build(case, rt)
    opt = torch.optim.SGD(module.learnable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    runner = StepRunner(module, opt, rt, mode="graphs")
    gen = torch.Generator().manual_seed(0)
    runner.start_epoch(1)
    for batch in stream.batches(gen, 64):
        runner.step(*batch, gen)
    assert runner.capture_failed is None and runner.stats()["eager_why"]["eager: warm-up of a new batch shape"] >= 2


# ---------------------------------------------------------------------------------------------- the detector
def _found(fn, deterministic=True) -> list[str]:
    guard = SyncGuard(deterministic)
    with guard:
        fn()
    return [op for op, _ in guard.found]


def test_the_guard_finds_the_ops_that_sync_on_cuda():
    x = torch.randn(6, 3, requires_grad=True)
    idx = torch.tensor([0, 2, 2])
    assert _found(lambda: float(x.detach().sum())) == ["_local_scalar_dense"]
    assert _found(lambda: x[x > 0]) != []  # boolean-mask indexing (a nonzero)
    assert _found(lambda: torch.bincount(idx)) == ["bincount"]
    assert _found(lambda: torch.unique(idx)) != []
    assert _found(lambda: torch.nonzero(idx)) == ["nonzero"]
    assert _found(lambda: torch.repeat_interleave(idx)) == ["repeat_interleave"]
    bank = torch.zeros(4, 3)
    # the deterministic index_put_ path syncs on CUDA; without determinism these ops do not
    assert _found(lambda: bank.index_copy_(0, idx, torch.ones(3, 3))) == ["index_copy_"]
    assert _found(lambda: bank.index_copy_(0, idx, torch.ones(3, 3)), deterministic=False) == []
    assert _found(lambda: bank.index_add_(0, idx, torch.ones(3, 3))) == ["index_add_"]
    assert _found(lambda: bank.scatter_(0, idx[:, None].expand(3, 3), torch.ones(3, 3))) == ["scatter_"]
    assert _found(lambda: x[idx].sum().backward()) == ["index_put"]  # the backward of indexing
    # ... and inside order_independent() a write is judged as a non-deterministic one
    with order_independent():
        assert _found(lambda: bank.index_copy_(0, idx, torch.ones(3, 3))) == []
    # not syncing: gathers, comparisons, where, reductions, scatter of a scalar value, scatter_reduce amax
    assert _found(lambda: (bank.index_select(0, idx), torch.where(bank > 0, bank, -bank).amax(1),
                           torch.zeros(4).scatter_(0, idx, 1.0),
                           torch.full((4,), -1).scatter_reduce_(0, idx, torch.arange(3), reduce="amax"))) == []


def test_order_independent_restores_the_determinism_setting():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with order_independent():
            assert not torch.are_deterministic_algorithms_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        with pytest.raises(KeyError), order_independent():
            raise KeyError
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


# -------------------------------------------------------------------------------- the sync-free ops, bit for bit
def test_batch_class_means_equal_class_centroids_bit_for_bit():
    from mcmikd.cmi import batch_class_means, class_centroids

    g = torch.Generator().manual_seed(0)
    for classes, b in [(10, 64), (100, 64), (10, 3), (5, 1)]:
        probs = torch.softmax(3 * torch.randn(b, classes, generator=g), 1)
        labels = torch.randint(0, classes, (b,), generator=g)
        assert torch.equal(batch_class_means(probs, labels, classes).nan_to_num(-1.0),
                           class_centroids(probs, labels, classes).nan_to_num(-1.0))
    assert _found(lambda: batch_class_means(probs, labels, classes)) == []


def test_crd_memory_write_keeps_the_last_occurrence_of_a_repeated_image():
    d = td._build("crd", *td.SAME_PAIR)
    memory = d.memory_s.clone()
    idx = torch.tensor([3, 5, 3, 7])
    v = torch.nn.functional.normalize(torch.randn(4, memory.shape[1]), dim=1)
    before = memory.clone()
    d._update_memory(memory, idx, v)
    m = d.hp["nce_momentum"]
    for pos, row in [(1, 5), (2, 3), (3, 7)]:  # slot 3 gets its last occurrence (batch position 2)
        new = before[row] * m + v[pos] * (1 - m)
        assert torch.equal(memory[row], new / new.pow(2).sum().sqrt())
    untouched = [r for r in range(len(memory)) if r not in (3, 5, 7)]
    assert torch.equal(memory[untouched], before[untouched])


# ------------------------------------------------------------------------- a step that syncs: never captured
class _Syncing(torch.nn.Module):
    """Wraps a method and reads a value on the host inside its step (as a careless plug-in might)."""

    name = "syncing"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward_train(self, images, targets, **kw):
        logits, terms = self.inner.forward_train(images, targets, **kw)
        if float(terms["ce"].detach()) > 1e9:  # .item(): a host sync
            terms["ce"] = terms["ce"] * 0
        return logits, terms

    def learnable_parameters(self):
        return self.inner.learnable_parameters()


def _run(strict: bool, mode: str = "graphs"):
    from mcmikd.step import StepRunner

    rt = ts._runtime(compile="graphs")
    module, _, stream = ts._build("kd", rt)
    wrapped = _Syncing(module)
    opt = torch.optim.SGD(wrapped.learnable_parameters(), lr=0.05, momentum=0.9)
    runner = StepRunner(wrapped, opt, rt, mode=mode, strict=strict)
    gen = torch.Generator().manual_seed(0)
    out = []
    for epoch in (1, 2):
        runner.start_epoch(epoch)
        for batch in stream.batches(gen, 64):
            runner.step(*batch, gen)
        out.append(runner.end_epoch())
    return runner, out


def test_an_explicit_graphs_runtime_refuses_a_step_that_syncs_in_one_line():
    from mcmikd.step import CaptureError

    with pytest.raises(CaptureError) as err:
        _run(strict=True)
    message = str(err.value)
    assert "\n" not in message and "syncing" in message and "_local_scalar_dense" in message
    assert "compile: auto" in message


def test_auto_falls_back_to_eager_steps_and_records_why():
    from mcmikd import step

    runner, out = _run(strict=False)
    stats = runner.stats()
    assert stats["graph_replays"] == 0 and "_local_scalar_dense" in stats["capture_failed"]
    assert stats["eager_why"][step.EAGER_SYNC] > 0 and step.STATIC not in stats["eager_why"]
    assert sum(stats["eager_why"].values()) == stats["eager_steps"]
    _, eager = _run(strict=False, mode="none")
    assert out == eager  # the fallback is the eager step, bit for bit


def test_every_result_records_how_its_steps_ran():
    from mcmikd import step

    result, _ = ts._train("kd")
    assert result.steps == {"mode": "none", "graph_replays": 0, "eager_steps": result.steps["eager_steps"],
                            "eager_why": {step.EAGER_NONE: result.steps["eager_steps"]}, "capture_failed": None}
    assert result.steps["eager_steps"] > 0
    result, _ = ts._train("crd", ts._runtime(compile="graphs"))
    assert set(result.steps["eager_why"]) == {step.EAGER_WARMUP, step.STATIC}
    assert result.steps["capture_failed"] is None


# -------------------------------------------------------------------------- Python constants of the step
@pytest.mark.parametrize("method", list(METHODS))
def test_equal_step_keys_give_equal_steps(method):
    """A captured step holds what forward_train computes in Python from `epoch` as constants; the graphs are keyed
    by `step_key(epoch)`, so two epochs with one key must give the same step (here: the same outputs)."""
    d = td._build(method, *td.CROSS_PAIR.get(method, td.SAME_PAIR))
    d.train()
    x, y, idx = td._batch()
    key = d.step_key if hasattr(d, "step_key") else (lambda e: None)
    pairs = [(e1, e2) for e1 in range(1, 40) for e2 in range(e1 + 1, 41) if key(e1) == key(e2)]
    assert pairs, method
    for e1, e2 in (pairs[0], pairs[-1]):
        outs = []
        for epoch in (e1, e2):
            m = copy.deepcopy(d)
            extra = m.step_inputs(y, idx, torch.Generator().manual_seed(0)) if hasattr(m, "step_inputs") else {}
            logits, terms = m.forward_train(x, y, epoch=epoch, indices=idx, generator=None, **extra)
            outs.append((logits.detach(), {k: v.detach() for k, v in terms.items()}))
        assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1].keys() == outs[1][1].keys()
        assert all(torch.equal(outs[0][1][k], outs[1][1][k]) for k in outs[0][1]), (method, e1, e2)


def test_the_capture_check_passes_on_cpu_for_every_case(tmp_path, monkeypatch):
    """bench/capture_check.py, as the GPU check runs it, at CPU smoke size: every method and teacher objective,
    `compile: graphs` (static buffers; the sync probe of each new shape included) equal to `none` bit for bit."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import capture_check

    out = tmp_path / "capture.md"
    monkeypatch.setattr(sys, "argv", ["capture_check.py", "--device", "cpu", "--small", "--steps", "3",
                                      "--epochs", "2", "--out", str(out)])
    assert capture_check.main() == 0
    text = out.read_text()
    assert text.count("| yes |") == len(METHODS) + len(capture_check.TEACHER_CASES) and "**" not in text
