"""The training step, without host syncs, optionally replayed as CUDA graphs (`runtime.compile`).

A step is: the objective's forward (teacher and student, heads, loss terms) under the runtime's autocast, the
sum of the terms, `zero_grad`, backward and the optimizer's step, then the step's statistics as one float64
device vector [term₁·n, …, term_K·n, correct] (n the batch size; `correct` only when the objective returns
logits). `StepRunner` adds these vectors up on the device and reads them once per epoch (`end_epoch`): the
means it returns are bit-identical to adding `float(term)·n` on the host after every step, as the engine did.

`mode`:
* ``"none"``: every step runs eagerly on the batch's own tensors.
* ``"graphs"``: each batch shape (the full batch size, a last partial batch, the varying batches of a zero-shot
  run) gets static input buffers once it has been seen `WARMUP_STEPS` times (those steps run eagerly, on a
  side stream on CUDA); from then on each batch of that shape is copied into the buffers and, on CUDA, the
  whole step is replayed as one captured CUDA graph (`torch.cuda.graph`); on CPU it runs eagerly on the
  buffers ("static buffers, eager replay"), so CPU tests exercise everything but the capture itself. At most
  `MAX_GRAPHS` shapes are held at once, the most frequent ones (a shape seen more often than the rarest held one
  takes its place); the others run eagerly. No sample is padded, masked or dropped. The graphs of a runner share
  one memory pool (they are replayed one at a time, and each replay's outputs are consumed before the next).

Capture fails safely and visibly: the last warm-up step of each shape runs under `mcmikd.syncguard.SyncGuard`
(and, on CUDA, `torch.cuda.set_sync_debug_mode("warn")`); a step that would sync with the host is never captured
(the capture would fail and leave the process's allocator in an undefined state). Under `runtime.compile: graphs`
written in the config (`Runtime.compile_strict`) that is an error (`CaptureError`, one line naming the op);
under `auto` the phase runs eagerly. Every step is counted by how it ran and, if eagerly, why (`StepRunner.counts`,
in each result's `steps` record: `mcmikd.engine.fit`).

What a captured graph holds as constants (Python numbers baked in at capture) is recaptured instead of
being updated in place: the graphs are keyed by the learning rate(s) of the optimizer and by
`objective.step_key(epoch)` (the Python values `forward_train` derives from `epoch`, e.g. DKD's warm-up
weight; None when it uses none), and dropped when that key changes (a new lr: a few recaptures per run, one
per epoch for a cosine schedule or during a warm-up; capture costs about one eager step). This keeps the
captured step exactly the eager one: torch 2.14's foreach SGD turns a tensor lr into a Python scalar
(`alpha=-lr`, a host sync that capture forbids), and fused SGD, which takes a tensor lr, computes other bits.

Random numbers the step needs from the training generator are drawn before it, outside any graph, by
`objective.step_inputs(targets, indices, generator)` (a dict of tensors passed to `forward_train` as keyword
arguments, e.g. CRD's negatives); `forward_train` gets `generator=None`. Device buffers the step updates
(BatchNorm statistics, CRD's memory banks and Z, MCMI's EMA centroids) are updated in place, so graphs see
them, resume loads them in place, and `before_epoch` hooks may rewrite them (in place) between epochs.
Optimizer state is created by the eager warm-up steps (or loaded on resume) before any capture.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter

import torch

from mcmikd.errors import McmiError
from mcmikd.syncguard import SyncGuard

WARMUP_STEPS = 2  # eager steps of a shape before it gets static buffers (and, on CUDA, is captured)
MAX_GRAPHS = 8  # shapes held (captured) at once per runner and key: the most frequent ones
MODES = ("none", "graphs")

# how a step ran: a key of `StepRunner.counts`
GRAPH = "graph replay"
STATIC = "static buffers (eager on CPU)"
EAGER_NONE = "eager: compile none"
EAGER_WARMUP = "eager: warm-up of a new batch shape"
EAGER_SHAPES = f"eager: a rare batch shape (more than {MAX_GRAPHS} shapes)"
EAGER_SYNC = "eager: the step syncs with the host"
EAGER_FAILED = "eager: capture failed"


class CaptureError(McmiError, RuntimeError):
    """`runtime.compile: graphs` was asked for and the training step cannot be captured (it syncs with the host)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Static:
    """Static input buffers of one batch shape, and on CUDA the graph captured on them."""

    def __init__(self, inputs: tuple[torch.Tensor, ...]):
        self.inputs = tuple(torch.empty_like(t).copy_(t) for t in inputs)
        self.graph = None
        self.out: torch.Tensor | None = None
        self.names: list[str] | None = None

    def load(self, inputs: tuple[torch.Tensor, ...]) -> None:
        for buf, t in zip(self.inputs, inputs):
            buf.copy_(t)


class StepRunner:
    """Runs the training steps of one phase (init or main) of `objective` with `optimizer` and keeps the
    epoch's statistics on the device (module docstring).

    `loss_fn(images, labels) -> {term: tensor}` replaces `objective.forward_train` (an init stage: no logits,
    no accuracy). `mode` is "none" or "graphs" (`Runtime.compile`). `forward`: what runs in place of
    `objective.forward_train` (the same call behind DistributedDataParallel in a multi-process job, eager only);
    there the epoch's sums are added up over the ranks before they are read (`end_epoch`). Raises ValueError for
    another mode, or for `forward` with graphs.
    """

    def __init__(self, objective, optimizer: torch.optim.Optimizer, runtime, *, loss_fn=None, mode: str = "none",
                 strict: bool | None = None, forward=None):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r}; use one of {MODES}")
        if forward is not None and mode != "none":
            raise ValueError("a distributed forward (DDP) runs eagerly only: use mode 'none'")
        self.objective, self.optimizer, self.runtime, self.loss_fn = objective, optimizer, runtime, loss_fn
        # what a step calls: `objective.forward_train`, or the same behind DistributedDataParallel (mcmikd.distributed)
        self.forward = forward
        self.scale = 1.0
        self.static = mode == "graphs"
        self.capture = self.static and runtime.device.type == "cuda"
        # strict: a step that cannot be captured is an error (compile: graphs written in the config), not a fallback
        self.strict = bool(getattr(runtime, "compile_strict", True) if strict is None else strict)
        self.epoch = 0
        self.key = None
        self.buffers: dict[tuple, _Static] = {}
        self.seen: Counter = Counter()  # steps of each batch shape so far (over every key: the frequent shapes)
        self.capture_failed: str | None = None  # why this runner captures nothing more (one line), or None
        self.fallback = EAGER_FAILED  # how the steps after a failure are counted
        self.captures = 0  # graphs captured (or, on CPU, static buffer sets made) so far
        self.counts: Counter = Counter()  # steps by how they ran (GRAPH, STATIC, EAGER_*)
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.samples = 0
        self.side_stream = torch.cuda.Stream(runtime.device) if self.capture else None
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None  # shared by this runner's graphs

    # ------------------------------------------------------------------------------------------ epochs
    def start_epoch(self, epoch: int) -> None:
        """Before an epoch's first step, after its learning rate is set: resets the sums and drops the
        graphs whose key (lr, `objective.step_key(epoch)`) is not this epoch's."""
        self.epoch = epoch
        self.sums, self.names, self.samples = None, None, 0
        step_key = None
        if self.loss_fn is None and hasattr(self.objective, "step_key"):
            step_key = self.objective.step_key(epoch)
        key = (tuple(float(g["lr"]) for g in self.optimizer.param_groups), step_key)
        if key != self.key:  # the shapes seen stay counted: frequent shapes are captured at once under the new key
            self.key, self.buffers = key, {}

    def end_epoch(self) -> tuple[dict[str, float], float]:
        """The epoch's mean of each named loss term (plus "total", their sum) and its train accuracy (%), read
        from the device in one transfer."""
        if self.sums is None:
            return {"total": 0.0}, 0.0
        from mcmikd import distributed

        samples = self.samples
        if distributed.active():  # the global batches' sums: every rank's slice (one all-reduce per epoch)
            count = torch.tensor([float(samples)], dtype=self.sums.dtype, device=self.sums.device)
            both = torch.cat([self.sums, count])
            both = distributed.all_reduce_sum(both)
            self.sums, samples = both[:-1], both[-1].item()
        values = self.sums.tolist()  # the epoch's one host read
        seen = max(samples, 1)
        means = {k: v / seen for k, v in zip(self.names, values)}
        means["total"] = sum(means.values())
        correct = values[len(self.names)] if len(values) > len(self.names) else 0
        return means, 100.0 * correct / seen

    # ------------------------------------------------------------------------------------------ steps
    def step(self, images: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor,
             generator: torch.Generator, scale: float = 1.0) -> None:
        """One optimizer step on a batch (images (B, C, H, W), labels and positions (B,) long); draws the
        step's random inputs from `generator` first (`objective.step_inputs`). `scale` multiplies the loss that is
        back-propagated, not the recorded terms (a rank's weight N·n_r/B in a multi-process job,
        `engine._epoch_pass`)."""
        self.scale = float(scale)
        extra = {}
        if self.loss_fn is None and hasattr(self.objective, "step_inputs"):
            extra = self.objective.step_inputs(labels, positions, generator)
        inputs = (images, labels, positions, *extra.values())
        if self.static:
            out, names = self._static_step(inputs, tuple(extra))
        else:
            out, names = self._compute(inputs, tuple(extra), cache=True)
            self.counts[EAGER_NONE] += 1
        if self.sums is None:
            self.sums, self.names = torch.zeros_like(out), names
        elif names != self.names:
            raise RuntimeError(f"the loss terms changed within an epoch: {self.names} then {names}")
        self.sums += out
        self.samples += len(labels)

    def _compute(self, inputs: tuple[torch.Tensor, ...], extra_names: tuple[str, ...], cache: bool):
        images, labels, positions, *extra = inputs
        with torch.autocast(self.runtime.device.type, dtype=torch.bfloat16, enabled=self.runtime.precision == "bf16",
                            cache_enabled=cache):
            if self.loss_fn is None:
                forward_train = self.objective.forward_train if self.forward is None else self.forward
                logits, terms = forward_train(images, labels, epoch=self.epoch, indices=positions,
                                              generator=None, **dict(zip(extra_names, extra)))
            else:
                logits, terms = None, self.loss_fn(images, labels)
        loss = sum(terms.values())
        if self.scale != 1.0:
            loss = loss * self.scale
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n = len(labels)
        parts = [v.detach().double() * n for v in terms.values()]
        if logits is not None:
            parts.append((logits.detach().argmax(1) == labels).sum().double())
        return torch.stack(parts), list(terms)

    def stats(self) -> dict:
        """How this runner's steps ran: {"graph_replays", "eager_steps", "eager_why": {reason: steps}} (CPU static
        buffer steps count as eager, reason STATIC), "capture_failed" (first line, or None)."""
        eager = {k: v for k, v in sorted(self.counts.items()) if k != GRAPH}
        return {"graph_replays": self.counts[GRAPH], "eager_steps": sum(eager.values()), "eager_why": eager,
                "capture_failed": self.capture_failed}

    def _eager_side(self, inputs, extra_names, why: str, guard: bool = False):
        """An eager step, counted under `why`; on CUDA on a side stream (warm-up before a capture, as
        torch.cuda.graph asks). `guard`: watch it for host syncs first (`_check_syncs`)."""
        self.counts[why] += 1
        if self.side_stream is None:
            return self._watched(inputs, extra_names) if guard else self._compute(inputs, extra_names, cache=False)
        current = torch.cuda.current_stream(self.runtime.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            if guard:
                result = self._watched(inputs, extra_names)
            else:
                result = self._compute(inputs, extra_names, cache=False)
        current.wait_stream(self.side_stream)
        return result

    def _state(self) -> list[torch.Tensor]:
        """Every tensor a step changes in place: the objective's parameters and buffers, the optimizer's state."""
        tensors = [t for t in self.objective.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)]
        for state in self.optimizer.state.values():
            tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
        return tensors

    def _watched(self, inputs, extra_names):
        """Probe the step for host syncs, then run it: the probe is the step under `SyncGuard` (and, on CUDA, the
        sync debug mode "warn", which only warns), after which every parameter, buffer and optimizer state is put
        back in place, so the step that counts runs unwatched (a Python dispatch mode can change the order in which
        autograd adds gradients, hence bits). A sync found makes this runner eager from now on, or raises
        `CaptureError` if strict."""
        state = self._state()
        saved = [t.detach().clone() for t in state]
        guard = SyncGuard(self.runtime.deterministic)
        cuda = self.runtime.device.type == "cuda"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                before = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with guard:
                    self._compute(inputs, extra_names, cache=False)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(before)
                with torch.no_grad():
                    for t, copy in zip(state, saved):
                        t.copy_(copy)
        found = guard.summary()
        if found is None:
            synced = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
            found = f"CUDA sync debug mode: {synced[0].splitlines()[0]}" if synced else None
        if found is not None:
            self._give_up(f"the training step syncs with the host ({found})", EAGER_SYNC)
        return self._compute(inputs, extra_names, cache=False)

    def _give_up(self, why: str, count_as: str) -> None:
        name = getattr(self.objective, "name", type(self.objective).__name__)
        if self.strict:
            raise CaptureError(f"runtime.compile: graphs cannot capture {name}'s training step: {why}; use "
                               f"compile: auto (falls back to eager steps, recorded in the result) or none")
        self.capture_failed, self.fallback = why, count_as
        self.buffers = {}
        _log(f"WARNING: {name}: {why}; this phase runs eagerly (compile: auto)")

    def _static_step(self, inputs, extra_names):
        shape = tuple((n, tuple(t.shape), t.dtype, t.stride()) for n, t in zip(
            ("images", "labels", "positions", *extra_names), inputs))
        entry = self.buffers.get(shape)
        if entry is None:
            self.seen[shape] += 1
            if self.capture_failed:
                return self._eager_side(inputs, extra_names, self.fallback)
            if self.seen[shape] <= WARMUP_STEPS:  # the last warm-up step is checked for host syncs
                return self._eager_side(inputs, extra_names, EAGER_WARMUP, guard=self.seen[shape] == WARMUP_STEPS)
            if len(self.buffers) >= MAX_GRAPHS:
                rarest = min(self.buffers, key=self.seen.__getitem__)
                if self.seen[rarest] >= self.seen[shape]:
                    return self._eager_side(inputs, extra_names, EAGER_SHAPES)
                del self.buffers[rarest]  # a more frequent shape takes its place (its graph is freed)
            entry = self.buffers[shape] = _Static(inputs)
            self.captures += 1
            if self.capture:
                return self._capture(entry, inputs, extra_names, shape)
        else:
            entry.load(inputs)
        if entry.graph is None:  # CPU: the same step, eagerly, on the static buffers
            out, entry.names = self._compute(entry.inputs, extra_names, cache=False)
            entry.out = out
            self.counts[STATIC] += 1
        else:
            entry.graph.replay()
            self.counts[GRAPH] += 1
        return entry.out, entry.names

    def _capture(self, entry: _Static, inputs, extra_names, shape):
        """Capture the step on `entry`'s buffers (already holding this batch) in the runner's memory pool and
        replay it once; on failure (not expected: syncs are found before) give up capturing (`_give_up`)."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates its own gradients
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.side_stream):
                entry.out, entry.names = self._compute(entry.inputs, extra_names, cache=False)
        except Exception as exc:
            del self.buffers[shape]
            self.optimizer.zero_grad(set_to_none=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._give_up(f"CUDA graph capture failed ({first})", EAGER_FAILED)
            return self._eager_side(inputs, extra_names, EAGER_FAILED)
        entry.graph = graph
        graph.replay()
        self.counts[GRAPH] += 1
        return entry.out, entry.names
