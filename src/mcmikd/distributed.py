"""Multi-process training jobs (`runtime.processes` = N > 1): one Snakemake job, N processes, torch.distributed.

How a job runs: the training job function (`mcmikd.jobs.teacher.train_teacher`, `mcmikd.jobs.student.train_student`,
both wrapped by `multiprocess`) is called in the Snakemake job's own process as always. With N > 1 it starts N
processes with `torch.multiprocessing` (start method spawn) that run the same function with the same arguments as
ranks 0..N-1 of one process group, waits for them and returns rank 0's result. Why spawn from the job's script and
not torchrun: the job stays one Snakemake `script:` job (its `snakemake` object, log, progress file and one-line
errors stay in the parent, `mcmikd.smk.run_job`), no shell rule has to rebuild the job's parameters on a command
line, and a failed or killed job is restarted by Snakemake (`rerun-incomplete`, `retries`) and resumes from its
epoch checkpoint, which is what torchrun's elastic restarts would add. All N processes run on one node (the SLURM
allocation of the job); the rendezvous is a file in a private temporary folder (no port to choose).

Inside the group (`engine.fit`, `engine.TrainStream`, `step.StepRunner`):
* backend `gloo` on CPU, `nccl` on CUDA with one GPU per rank (`cuda:<local rank>`);
* every rank draws the same seeded epoch order and the same augmentation of each *global* batch (the batch of the
  one-process run) from its own copy of the training generator, and trains on its contiguous slice of it
  (`shard_bounds`, `engine.rank_slices`; the streamed ImageNet source decodes only that slice,
  `streaming.StreamSource.rank_batches`); the generators therefore stay equal on every rank, and so does
  everything in a checkpoint;
* the trained network is wrapped in `DistributedDataParallel`, which averages the gradients over the ranks; each
  rank's loss is weighted by N·n_r/B (n_r its slice, B the global batch), so the averaged gradient is the gradient
  of the mean over the global batch also when B is not divisible by N (a short last batch, `last_batch: merge`,
  zero-shot batches);
* BatchNorm layers of the trained network normalise with the statistics of the global batch: `torch.nn.SyncBatchNorm`
  on CUDA; on CPU, where torch 2.14's SyncBatchNorm kernels do not exist (`aten::batch_norm_stats` is CUDA-only),
  `CpuSyncBatchNorm`, the same computation written with torch.distributed's differentiable all-gather (one
  collective per layer forward, one backward, as SyncBatchNorm);
* the epoch's loss sums and sample counts are all-reduced once per epoch, so the recorded training losses are those
  of the global batches;
* every rank evaluates the full test set after each epoch (the same model on the same images gives the same numbers
  on every rank, so early stops and hooks decide alike without communication); only rank 0 writes: the resume
  checkpoint, the progress file, the log, the model and result files. Every rank loads the same checkpoint on resume.

What stays out (`check_method`, `mcmikd.config.Grid.check_processes`): CUDA graphs (`runtime.compile: graphs`;
`auto` runs eagerly), methods whose loss couples the images of a batch, keeps state across batches or has an
init stage, and MCMI's `ema` centroids; each refused with one line before any job starts.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
import shutil
import sys
import tempfile

from mcmikd.errors import ConfigError

_rank = 0
_world = 1


def rank() -> int:
    """This process's rank in the job's process group (0 outside one)."""
    return _rank


def world_size() -> int:
    """Processes in the job's process group (1 outside one)."""
    return _world


def active() -> bool:
    """True inside a multi-process job's process group."""
    return _world > 1


def is_writer() -> bool:
    """Whether this process writes the job's files (rank 0; the only process of a one-process job)."""
    return _rank == 0


def shard_bounds(batch: int, rank_: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank `rank_`'s contiguous slice of a global batch of `batch` images over `world` ranks: the
    first `batch % world` ranks get one image more (torch.tensor_split's split). Raises ConfigError when a rank
    would get no image."""
    if batch < world:
        raise ConfigError(f"a training batch of {batch} images cannot be split over runtime.processes = {world}: "
                          f"every process needs at least one image; use fewer processes or a larger batch_size")
    q, r = divmod(batch, world)
    start = rank_ * q + min(rank_, r)
    return start, start + q + (1 if rank_ < r else 0)


def processes_of(params: dict) -> int:
    """The job's process count (`runtime.processes` in its params; 1 when left out)."""
    return int((params.get("runtime") or {}).get("processes", 1))


# --------------------------------------------------------------------------------------------- launching
def multiprocess(func):
    """Decorate a training job function (keyword `params` with the job's config slice, optional `threads`): with
    `runtime.processes` = N > 1, calling it outside a process group runs it as N processes (`launch`), each with
    `threads` // N torch threads, and returns rank 0's result; inside a group, or with N = 1, it is `func` itself."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        n = processes_of(arguments["params"])
        if n <= 1 or active():
            return func(*args, **kwargs)
        if arguments.get("threads"):
            arguments["threads"] = max(1, int(arguments["threads"]) // n)
        return launch(wrapper, dict(arguments), n, str(arguments["params"]["runtime"].get("device", "auto")))

    return wrapper


def backend_for(device: str, processes: int) -> str:
    """`gloo` for CPU jobs, `nccl` for CUDA jobs (one GPU per process). Raises ConfigError when fewer GPUs are
    visible than processes."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not cuda:
        return "gloo"
    if device.startswith("cuda:"):
        raise ConfigError(f"runtime.device is '{device}' but runtime.processes = {processes} uses one GPU per "
                          f"process (cuda:0..cuda:{processes - 1}); use 'auto' or 'cuda'")
    visible = torch.cuda.device_count()
    if visible < processes:
        raise ConfigError(f"runtime.processes = {processes} needs {processes} GPUs but {visible} are visible; ask "
                          f"the job for {processes} GPUs (resources gpu: 1 per process) or use fewer processes")
    return "nccl"


def launch(func, kwargs: dict, processes: int, device: str = "auto"):
    """Run `func(**kwargs)` as `processes` ranks of one process group (module docstring) and return rank 0's
    result. A user error (`McmiError`) raised in a rank is raised here again, in one line; any other failure of a
    rank stops the others (torch.multiprocessing) and is raised with that rank's traceback."""
    import importlib

    import torch.multiprocessing as mp

    from mcmikd import jobprogress

    # the module (`mp.spawn` is the function of the same name)
    ProcessException = importlib.import_module("torch.multiprocessing.spawn").ProcessException  # noqa: N806

    backend = backend_for(device, processes)
    folder = tempfile.mkdtemp(prefix="mcmikd-ddp-")
    log_name = getattr(sys.stderr, "name", None)
    log_path = log_name if isinstance(log_name, str) and os.path.isfile(log_name) else None
    progress = str(jobprogress.current_path()) if jobprogress.active() else None
    try:
        try:
            mp.spawn(_worker, args=(processes, folder, backend, func, kwargs, log_path, progress, os.getpid()),
                     nprocs=processes, join=True, start_method="spawn")
        except ProcessException:
            for r in range(processes):
                error = os.path.join(folder, f"error{r}.pkl")
                if os.path.exists(error):
                    with open(error, "rb") as handle:
                        raise pickle.load(handle) from None
            raise
        finally:
            jobprogress.adopt()  # rank 0's record: run_job writes the job's end state into it
        with open(os.path.join(folder, "result.pkl"), "rb") as handle:
            return pickle.load(handle)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _exit_with(parent: int) -> None:
    """End this process as soon as process `parent` (the job's own process) is gone: a job killed with SIGKILL (out
    of memory, a lost head process) leaves no training behind that could still write its outputs."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mcmikd-parent-watch").start()


def _worker(local_rank: int, world: int, folder: str, backend: str, func, kwargs: dict, log_path: str | None,
            progress: str | None, parent: int | None = None) -> None:
    """One rank: join the group, run `func(**kwargs)`, leave the group; rank 0 writes the log, the progress file
    and the result, the others write nothing. The rank ends when its parent `parent` does (`_exit_with`)."""
    if parent is not None:
        _exit_with(parent)
    global _rank, _world
    import torch
    import torch.distributed as dist

    from mcmikd import jobprogress
    from mcmikd.errors import McmiError

    if local_rank == 0:
        if log_path:
            sys.stdout = sys.stderr = open(log_path, "a", buffering=1)  # noqa: SIM115 (the process's own log)
        jobprogress.record_to(progress)
    else:
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=f"file://{os.path.join(folder, 'rendezvous')}", rank=local_rank,
                            world_size=world)
    _rank, _world = local_rank, world
    try:
        result = func(**kwargs)
    except McmiError as err:
        with open(os.path.join(folder, f"error{local_rank}.pkl"), "wb") as handle:
            pickle.dump(err, handle)
        raise
    finally:
        _rank, _world = 0, 1
    dist.destroy_process_group()
    if local_rank == 0:
        with open(os.path.join(folder, "result.pkl"), "wb") as handle:
            pickle.dump(result, handle)


# --------------------------------------------------------------------------------------------- inside the group
def all_reduce_sum(tensor):
    """`tensor` summed over the ranks, in place (unchanged outside a group)."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def sync_batchnorm(module):
    """`module` with every BatchNorm layer normalising over the global batch (module docstring): torch's
    SyncBatchNorm on CUDA, `CpuSyncBatchNorm` on CPU. Layers are replaced in place (same parameters and buffers, so
    an optimizer built before keeps them); the root module is returned."""
    import torch

    device = next(iter(module.parameters())).device
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module):
    import torch

    if isinstance(module, torch.nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm()):
        new = CpuSyncBatchNorm()(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


@functools.cache
def CpuSyncBatchNorm():  # noqa: N802 (returns the class; defined on first use so this module imports no torch)
    """The class `CpuSyncBatchNorm(nn.BatchNorm2d)`: in training mode inside a process group, the statistics of the
    global batch, as torch's SyncBatchNorm computes them on CUDA: each rank's count n_r, mean m_r and sum of squared
    deviations M_r per channel, gathered from every rank in one collective and combined (Chan et al.'s parallel
    variance: μ = Σ n_r·m_r / n, n·σ² = Σ [M_r + n_r·(m_r − μ)²]); then y = (x − μ)/√(σ² + ε)·γ + β with the biased
    σ², and the running statistics updated with the unbiased one (n/(n−1)·σ²), as `nn.BatchNorm2d` does over the whole
    batch (PyTorch docs, BatchNorm2d). The gather is torch.distributed's differentiable all-gather
    (`torch.distributed.nn.functional.all_gather`), whose backward hands each rank the gradients of its own statistics
    summed over the ranks, as SyncBatchNorm's backward all-reduces them. In float64 the gradients of a 2-process
    MobileNetV1 or torchvision ResNet-18 equal the 1-process ones to about 1e-12 (tests/test_ddp.py); in float32, on
    the tests' tiny batches (2-3 images per rank, 2 × 2 final maps), rounding is amplified through the stacked
    layers to about 1 % of the largest gradient, while the CIFAR zoo's 8 × 8 maps stay within 1e-5. Outside a
    group or in eval mode it is `nn.BatchNorm2d`."""
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    class _CpuSyncBatchNorm(torch.nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
                return super().forward(x)
            dims = (0, 2, 3)
            count = x.numel() // x.shape[1]
            mean_r = x.mean(dims)
            m2_r = (x - mean_r.view(1, -1, 1, 1)).pow(2).sum(dims)
            mine = torch.stack([torch.full_like(mean_r, count), mean_r, m2_r]).unsqueeze(0)  # (1, 3, C)
            every = torch.cat(all_gather(mine))  # (world, 3, C)
            counts, means, m2s = every[:, 0], every[:, 1], every[:, 2]
            n = counts.sum(0)
            mean = (counts * means).sum(0) / n
            var = (m2s + counts * (means - mean).pow(2)).sum(0) / n
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked += 1
                    factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                              else self.momentum)
                    self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                    self.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1), alpha=factor)
            y = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
            if self.affine:
                y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            return y

    _CpuSyncBatchNorm.__name__ = _CpuSyncBatchNorm.__qualname__ = "CpuSyncBatchNorm"
    return _CpuSyncBatchNorm


def wrap_ddp(objective, device):
    """`objective.forward_train` behind `DistributedDataParallel` (the callable the step runner trains through):
    the objective's trained network gets global-batch BatchNorm (`sync_batchnorm`) first; the frozen teacher, which
    takes no gradients, is not synchronised (each rank runs it on its own slice)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    sync_batchnorm(objective.student)

    class TrainForward(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images, targets, **kwargs):
            return self.inner.forward_train(images, targets, **kwargs)

    ids = [device.index] if device.type == "cuda" else None
    # buffers are not broadcast: the BatchNorm statistics are the same on every rank (global batch statistics)
    return DistributedDataParallel(TrainForward(objective), device_ids=ids, forward_sync_buffers=False)
