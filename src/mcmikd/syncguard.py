"""Which ATen ops of a training step would make the host wait for a CUDA device (a "host sync").

A CUDA graph cannot capture a step that syncs: the capture fails (and, in torch 2.14, leaves the caching allocator
and the current stream in an undefined state for the rest of the process; `mcmikd.step`). `SyncGuard` is a
`TorchDispatchMode` that records every op of a step that syncs on CUDA, on any device, so that

* `mcmikd.step.StepRunner` checks a step *before* capturing it (on CUDA together with
  `torch.cuda.set_sync_debug_mode`, which sees the syncs this list does not know), and
* the CPU test suite checks every method and teacher objective without a GPU (`tests/test_syncfree.py`).

The list comes from reading ATen (torch 2.14): ops that read a device value on the host (`.item()`, `nonzero`,
boolean-mask indexing, `unique`, `bincount`, `repeat_interleave` without `output_size`, ...) sync always; under
`torch.use_deterministic_algorithms(True)` (the paper runtime, `runtime.deterministic`), `index_put_`,
`index_copy_`, `index_add_`, `scatter_`/`scatter_add_` with a tensor source and `put_` take the sorting
`index_put_with_sort` path, whose index range check reads `index.max().item()`. Ops absent from the list
(`index_select`, `gather` without grad, `torch.where`, comparisons, reductions, matmul, `scatter_` with a scalar
value) do not sync. Device-to-host copies (`.cpu()`, `.tolist()`) show as `_local_scalar_dense` or `_to_copy`
to the CPU; the latter is seen only when the step's tensors are on CUDA.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# op overload packet name -> why it syncs (always)
ALWAYS = {
    "_local_scalar_dense": "reads a tensor value on the host (.item(), float(), int(), bool(), .tolist())",
    "nonzero": "output size depends on the data",
    "masked_select": "output size depends on the data",
    "unique": "output size depends on the data",
    "_unique": "output size depends on the data",
    "_unique2": "output size depends on the data",
    "unique_dim": "output size depends on the data",
    "unique_consecutive": "output size depends on the data",
    "bincount": "reads the largest label on the host",
    "histc": "reads the range on the host",
    "argwhere": "output size depends on the data",
    "equal": "returns a Python bool",
    "is_nonzero": "returns a Python bool",
    "allclose": "returns a Python bool",
}
# ... only under torch.use_deterministic_algorithms(True) (the CUDA kernels route to index_put_with_sort)
DETERMINISTIC = {
    "index_put": "deterministic index_put_ sorts the indices and reads index.max() on the host",
    "index_put_": "deterministic index_put_ sorts the indices and reads index.max() on the host",
    "_index_put_impl_": "deterministic index_put_ sorts the indices and reads index.max() on the host",
    "index_copy": "deterministic index_copy_ runs as index_put_ (reads index.max() on the host)",
    "index_copy_": "deterministic index_copy_ runs as index_put_ (reads index.max() on the host)",
    "index_add": "deterministic index_add_ runs as index_put_ with accumulate (reads index.max() on the host)",
    "index_add_": "deterministic index_add_ runs as index_put_ with accumulate (reads index.max() on the host)",
    "scatter_add": "deterministic scatter_add_ runs as index_put_ with accumulate",
    "scatter_add_": "deterministic scatter_add_ runs as index_put_ with accumulate",
    "put_": "deterministic put_ runs as index_put_",
    "index_fill_": "deterministic index_fill_ runs as index_put_",
}
SCATTER_TENSOR_SOURCE = "deterministic scatter_ with a tensor source runs as index_put_"
SCATTER_REDUCE = "deterministic scatter_reduce (sum, mean) runs as index_put_ with accumulate"


_ORDER_INDEPENDENT = [0]  # > 0 inside `order_independent()`


@contextlib.contextmanager
def order_independent():
    """Run an indexed write whose result cannot depend on the order of duplicate indices (the caller makes the
    values written to one index equal, e.g. CRD's memory rows) with PyTorch's deterministic algorithms off: on CUDA
    that avoids the sorting `index_put_` path and its host sync; the bits written are the same either way.
    `SyncGuard` judges the ops inside as non-deterministic ones."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    _ORDER_INDEPENDENT[0] += 1
    if enabled:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        _ORDER_INDEPENDENT[0] -= 1
        if enabled:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)


def _is_bool(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


def sync_reason(func, args, kwargs, deterministic: bool) -> str | None:
    """Why `func(*args, **kwargs)` (an ATen overload) syncs with the host on CUDA, or None when it does not."""
    name = func.overloadpacket.__name__
    if name in ALWAYS:
        return ALWAYS[name]
    if name == "repeat_interleave" and kwargs.get("output_size") is None:
        return "repeat_interleave without output_size reads the total on the host"
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(_is_bool(i) for i in (indices or ()) if i is not None):
            return "boolean-mask indexing (a nonzero inside)"
    if name == "_to_copy" and isinstance(args[0], torch.Tensor) and args[0].is_cuda:
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cpu":
            return "copies a CUDA tensor to the host"
    if not deterministic:
        return None
    if name in DETERMINISTIC:
        return DETERMINISTIC[name]
    if name in ("scatter", "scatter_") and func._overloadname.startswith("src"):
        return SCATTER_TENSOR_SOURCE
    if name in ("scatter_reduce", "scatter_reduce_"):
        reduce = args[4] if len(args) > 4 else kwargs.get("reduce")
        if reduce in ("sum", "mean"):
            return SCATTER_REDUCE
    return None


class SyncGuard(TorchDispatchMode):
    """Records (op name, reason) of every op run inside it that syncs with the host on CUDA (module docstring).

    `deterministic`: whether the step runs under `torch.use_deterministic_algorithms(True)`. Runs every op as is
    (it only watches), forward and backward alike; `found` lists the distinct (op, reason) pairs in order.
    """

    def __init__(self, deterministic: bool):
        super().__init__()
        self.deterministic = deterministic
        self.found: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs, self.deterministic and not _ORDER_INDEPENDENT[0])
        if reason is not None:
            hit = (str(func.overloadpacket.__name__), reason)
            if hit not in self.found:
                self.found.append(hit)
        return func(*args, **kwargs)

    def summary(self) -> str | None:
        """One line naming the syncing ops found ('aten.item: why; ...'), or None when there were none."""
        if not self.found:
            return None
        return "; ".join(f"{op}: {why}" for op, why in self.found)
