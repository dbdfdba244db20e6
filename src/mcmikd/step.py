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
  `MAX_GRAPHS` shapes per phase are captured; others run eagerly. No sample is padded, masked or dropped.

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
from collections import Counter

import torch

WARMUP_STEPS = 2  # eager steps of a shape before it gets static buffers (and, on CUDA, is captured)
MAX_GRAPHS = 8  # shapes captured per phase and key; further shapes run eagerly
MODES = ("none", "graphs")


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
    no accuracy). `mode` is "none" or "graphs" (`Runtime.compile`). Raises ValueError for another mode.
    """

    def __init__(self, objective, optimizer: torch.optim.Optimizer, runtime, *, loss_fn=None, mode: str = "none"):
        if mode not in MODES:
            raise ValueError(f"unknown step mode {mode!r}; use one of {MODES}")
        self.objective, self.optimizer, self.runtime, self.loss_fn = objective, optimizer, runtime, loss_fn
        self.static = mode == "graphs"
        self.capture = self.static and runtime.device.type == "cuda"
        self.epoch = 0
        self.key = None
        self.buffers: dict[tuple, _Static] = {}
        self.seen: Counter = Counter()
        self.capture_failed = False
        self.captures = 0  # graphs captured (or, on CPU, static buffer sets made) so far
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.samples = 0
        self.side_stream = torch.cuda.Stream(runtime.device) if self.capture else None

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
        if key != self.key:
            self.key, self.buffers, self.seen = key, {}, Counter()

    def end_epoch(self) -> tuple[dict[str, float], float]:
        """The epoch's mean of each named loss term (plus "total", their sum) and its train accuracy (%), read
        from the device in one transfer."""
        if self.sums is None:
            return {"total": 0.0}, 0.0
        values = self.sums.tolist()  # the epoch's one host read
        seen = max(self.samples, 1)
        means = {k: v / seen for k, v in zip(self.names, values)}
        means["total"] = sum(means.values())
        correct = values[len(self.names)] if len(values) > len(self.names) else 0
        return means, 100.0 * correct / seen

    # ------------------------------------------------------------------------------------------ steps
    def step(self, images: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor,
             generator: torch.Generator) -> None:
        """One optimizer step on a batch (images (B, C, H, W), labels and positions (B,) long); draws the
        step's random inputs from `generator` first (`objective.step_inputs`)."""
        extra = {}
        if self.loss_fn is None and hasattr(self.objective, "step_inputs"):
            extra = self.objective.step_inputs(labels, positions, generator)
        inputs = (images, labels, positions, *extra.values())
        if self.static:
            out, names = self._static_step(inputs, tuple(extra))
        else:
            out, names = self._compute(inputs, tuple(extra), cache=True)
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
                logits, terms = self.objective.forward_train(images, labels, epoch=self.epoch, indices=positions,
                                                             generator=None, **dict(zip(extra_names, extra)))
            else:
                logits, terms = None, self.loss_fn(images, labels)
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n = len(labels)
        parts = [v.detach().double() * n for v in terms.values()]
        if logits is not None:
            parts.append((logits.detach().argmax(1) == labels).sum().double())
        return torch.stack(parts), list(terms)

    def _eager_side(self, inputs, extra_names):
        """An eager step; on CUDA on a side stream (warm-up before a capture, as torch.cuda.graph asks)."""
        if self.side_stream is None:
            return self._compute(inputs, extra_names, cache=False)
        current = torch.cuda.current_stream(self.runtime.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            result = self._compute(inputs, extra_names, cache=False)
        current.wait_stream(self.side_stream)
        return result

    def _static_step(self, inputs, extra_names):
        shape = tuple((n, tuple(t.shape), t.dtype, t.stride()) for n, t in zip(
            ("images", "labels", "positions", *extra_names), inputs))
        entry = self.buffers.get(shape)
        if entry is None:
            self.seen[shape] += 1
            if self.capture_failed or len(self.buffers) >= MAX_GRAPHS or self.seen[shape] <= WARMUP_STEPS:
                return self._eager_side(inputs, extra_names)
            entry = self.buffers[shape] = _Static(inputs)
            self.captures += 1
            if self.capture:
                return self._capture(entry, inputs, extra_names, shape)
        else:
            entry.load(inputs)
        if entry.graph is None:  # CPU: the same step, eagerly, on the static buffers
            out, entry.names = self._compute(entry.inputs, extra_names, cache=False)
            entry.out = out
        else:
            entry.graph.replay()
        return entry.out, entry.names

    def _capture(self, entry: _Static, inputs, extra_names, shape):
        """Capture the step on `entry`'s buffers (already holding this batch) and replay it once; on failure
        log one line and run this and every later step of the phase eagerly."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates its own gradients
        try:
            with torch.cuda.graph(graph, stream=self.side_stream):
                entry.out, entry.names = self._compute(entry.inputs, extra_names, cache=False)
        except Exception as exc:  # e.g. an op that syncs with the host inside a method's step
            self.capture_failed = True
            del self.buffers[shape]
            self.optimizer.zero_grad(set_to_none=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _log(f"WARNING: CUDA graph capture of the training step failed ({first}); this phase runs eagerly")
            return self._eager_side(inputs, extra_names)
        entry.graph = graph
        graph.replay()
        return entry.out, entry.names
