"""The training engine: device-resident data, batched augmentation, SGD schedules, evaluation, and
checkpoints that let a killed job resume and end with exactly the metrics of an uninterrupted run.

Every random draw during training (epoch order, crops, flips, CRD negatives) comes from one explicit
`torch.Generator` whose state is saved with each epoch checkpoint, together with the model, heads, optimizer
and history; model initialisation happens before the first checkpoint, so a resumed run replays exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mcmikd import jobprogress as progress
from mcmikd.augment import Normalizer, random_crop_flip
from mcmikd.cmi import conditional_mutual_information
from mcmikd.data import DatasetTensors
from mcmikd.errors import ConfigError
from mcmikd.step import GRAPH as STEP_GRAPH
from mcmikd.step import StepRunner


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- runtime set-up
def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device is '{spec}' but no CUDA device is available; use 'auto' or 'cpu'")
    return device


# `runtime.compile`: how training steps run (mcmikd.step): eagerly, or replayed as CUDA graphs on static buffers
# (on CPU the static buffers are used and the step runs eagerly on them); auto = graphs on CUDA, none on CPU
COMPILE_MODES = ("none", "graphs", "auto")


@dataclass
class Runtime:
    device: torch.device
    channels_last: bool
    precision: str  # fp32 | bf16
    deterministic: bool
    compile: str = "none"  # none | graphs (the training step; mcmikd.step)
    compile_strict: bool = True  # graphs written in the config: a step that cannot be captured is an error
    processes: int = 1  # runtime.processes: ranks of the job's process group (mcmikd.distributed)

    @classmethod
    def from_config(cls, cfg: dict, threads: int | None = None) -> Runtime:
        """The runtime of a job's config slice (`runtime`). Under `processes` = N > 1 (inside the job's process group,
        `mcmikd.distributed`) a CUDA job uses `cuda:<rank>`, and steps run eagerly (`compile: graphs` is refused
        with a ConfigError, `auto` means none)."""
        from mcmikd import distributed

        device = resolve_device(cfg.get("device", "auto"))
        processes = int(cfg.get("processes", 1))
        if processes > 1 and device.type == "cuda" and distributed.active():
            device = torch.device("cuda", distributed.rank())
        if threads:
            torch.set_num_threads(int(threads))
        channels_last = cfg.get("channels_last", "auto")
        channels_last = device.type == "cuda" if channels_last == "auto" else bool(channels_last)
        deterministic = bool(cfg.get("deterministic", True))
        if device.type == "cuda":
            if deterministic:
                # cuBLAS needs a fixed workspace to be deterministic (CUDA ≥ 10.2); it must be set before the first
                # cuBLAS call of the process, which comes later (models are built after this)
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # PyTorch's deterministic kernels where they exist, an error where none does (the project avoids those:
            # models.base.adaptive_avg_pool); index_add_ (class centroids) has a deterministic CUDA version
            torch.use_deterministic_algorithms(deterministic)
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cuda.matmul.allow_tf32 = not deterministic
            torch.backends.cudnn.allow_tf32 = not deterministic
        precision = cfg.get("precision", "fp32")
        if precision == "bf16" and device.type != "cuda":
            precision = "fp32"  # bf16 autocast only pays off on GPUs; CPU runs stay exact fp32
        compile_ = cfg.get("compile", "none")
        if compile_ not in COMPILE_MODES:
            raise ConfigError(f"runtime.compile is {compile_!r}; use one of {list(COMPILE_MODES)}")
        strict = compile_ == "graphs"
        if processes > 1 and compile_ == "graphs":
            raise ConfigError(f"runtime.compile: graphs cannot run with runtime.processes = {processes} (CUDA graphs "
                              f"are not captured around DistributedDataParallel here); use compile: auto or none")
        if compile_ == "auto":
            compile_ = "graphs" if device.type == "cuda" and processes == 1 else "none"
        return cls(device=device, channels_last=channels_last, precision=precision, deterministic=deterministic,
                   compile=compile_, compile_strict=strict, processes=processes)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


# --------------------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    epochs: int
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    last_batch: str = "keep"  # keep (RepDistiller: a short last batch is a step of its own) | merge (LAST_BATCH)

    @classmethod
    def from_dict(cls, cfg: dict, **overrides) -> Recipe:
        known = {k: v for k, v in {**cfg, **overrides}.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based `epoch` (RepDistiller steps at the start of each epoch)."""
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(epoch > m for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.lr


def make_optimizer(params, recipe: Recipe) -> torch.optim.SGD:
    """SGD with momentum and weight decay (RepDistiller's). On CUDA the foreach implementation (a few fused
    multi-tensor kernels per step instead of several per parameter; PyTorch's own default there, so CUDA bits
    are unchanged); on CPU PyTorch's default (the per-parameter loop), so CPU results stay bit-identical."""
    params = list(params)
    foreach = True if params and params[0].is_cuda else None
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           foreach=foreach)


# --------------------------------------------------------------------------------------------- data streams
class TrainStream:
    """The training images the model may see, on the device, served as augmented, normalised batches.

    * `pool`: indices into the training set (a few-shot subset); None = all of it.
    * `epoch_length`: samples per epoch; the official few-shot code keeps the full training-set length, so a
      subset is cycled through ≈ 1/fraction times per epoch.
    * `omitted`: classes dropped from every batch *before* any forward pass (zero-shot experiments); the
      student never sees them.
    `positions` returned with each batch index the visible images 0..num_visible-1 (CRD's memory bank).

    No training step sees fewer than two images (BatchNorm cannot normalise one sample, CC and RKD are NaN on
    it): the epoch order is cut into chunks of `batch_size`, omitted classes are removed from each (a chunk
    left empty is skipped), and a chunk left with one image is carried over into the next non-empty chunk
    (its image first), or, when no chunk follows, appended to the previous one. Every visible image of the
    epoch order is served exactly once, in order; every other batch is exactly as without this rule, and each
    chunk keeps its own augmentation draws, so an epoch draws the same random numbers as without it.
    Raises ConfigError at set-up when an epoch could hold only one visible image in all (nothing to merge).
    """

    def __init__(self, data: DatasetTensors, runtime: Runtime, *, pool: torch.Tensor | None = None,
                 epoch_length: int | None = None, omitted: tuple[int, ...] = (), padding: int = 0,
                 hflip: bool = False):
        self.device = runtime.device
        n_total = len(data.train_labels)
        self.pool = torch.arange(n_total) if pool is None else torch.as_tensor(pool, dtype=torch.long)
        if len(self.pool) == 0:
            raise ConfigError("the training subset is empty; use a larger fraction")
        self.epoch_length = int(epoch_length or len(self.pool))
        self.images = data.train_images.to(self.device)
        self.labels = data.train_labels.to(self.device)
        self.omitted = tuple(sorted(int(c) for c in omitted))
        pool_labels = data.train_labels[self.pool]
        keep = ~torch.isin(pool_labels, torch.tensor(self.omitted, dtype=torch.long))
        visible = self.pool[keep]
        if len(visible) == 0:
            raise ConfigError("every training image is of an omitted class; omit fewer classes")
        low, high = self._visible_per_epoch(len(self.pool), len(visible), self.epoch_length)
        if low <= 1 <= high:
            raise ConfigError(f"an epoch can hold only one training image ({len(visible)} visible of "
                              f"{len(self.pool)} in the subset, {self.epoch_length} samples per epoch) and a "
                              f"training step needs two; use a larger fraction or epoch length, or omit fewer classes")
        self.visible_labels = data.train_labels[visible]
        position = torch.full((n_total,), -1, dtype=torch.long)
        position[visible] = torch.arange(len(visible))
        self.position = position.to(self.device)
        self.omitted_dev = torch.tensor(self.omitted, dtype=torch.long, device=self.device)
        self.padding, self.hflip = padding, hflip
        self.normalize = Normalizer(data.mean, data.std, self.device, runtime.channels_last)

    @property
    def num_visible(self) -> int:
        return len(self.visible_labels)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.pool)
        repeats = -(-self.epoch_length // n)
        perms = [self.pool.to(self.device)[torch.randperm(n, generator=generator, device=self.device)]
                 for _ in range(repeats)]
        return torch.cat(perms)[: self.epoch_length]

    @staticmethod
    def _visible_per_epoch(n_pool: int, n_visible: int, epoch_length: int) -> tuple[int, int]:
        """Fewest and most visible samples an epoch order can hold: whole permutations of the pool, then the
        first r of one more (a hypergeometric draw, every count in between possible)."""
        full, r = divmod(epoch_length, n_pool)
        return full * n_visible + max(0, r - (n_pool - n_visible)), full * n_visible + min(r, n_visible)

    def batch_chunks(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """The chunks (training-set indices, 1-D long) making up each batch of the epoch `order`: chunks of
        `batch_size` without the omitted classes, empty ones skipped; a one-image chunk joins a neighbour
        (class docstring), so a batch is one chunk, or two (or three) whose concatenation has ≥ 2 images.

        One chunk is held back until the next is known; no random numbers are drawn here. The chunks' sizes
        are known on the host: without omitted classes from the order's length, with them from one transfer
        of the epoch's visibility mask (the only host sync of an epoch's batches); each chunk is a slice of
        the visible order, with exactly the images, in the order, that filtering each chunk would give.
        """
        if self.omitted:
            keep = ~torch.isin(self.labels[order], self.omitted_dev)
            visible = keep.cpu()  # the epoch's one transfer to the host
            counts = [int(visible[s:s + batch_size].sum()) for s in range(0, len(visible), batch_size)]
            order = order[keep]
        else:
            counts = [min(batch_size, len(order) - s) for s in range(0, len(order), batch_size)]
        held, carry, start = None, None, 0
        for count in counts:
            idx = order[start:start + count]
            start += count
            if count == 0:
                continue
            chunks = (idx,) if carry is None else (carry, idx)
            carry = None
            if len(chunks) == 1 and count == 1:
                carry = idx
                continue
            if held is not None:
                yield held
            held = chunks
        if carry is not None:
            if held is None:  # prevented at set-up (_visible_per_epoch)
                raise ConfigError("this epoch holds only one training image; a training step needs two")
            held = held + (carry,)
        if held is not None:
            yield held

    def batches(self, generator: torch.Generator, batch_size: int,
                last_batch: str = "keep") -> Iterator[tuple[torch.Tensor, ...]]:
        """(normalised augmented images, labels, positions) per batch of one epoch drawn with `generator`;
        images (B, C, H, W) float, labels and positions (B,) long, B ≥ 2. `last_batch`: "keep" or "merge"
        (`merge_short_last`). Raises ValueError for another value."""
        order = self.order(generator)
        chunks_of = self.batch_chunks(order, batch_size)
        if last_batch == "merge":
            chunks_of = merge_short_last(chunks_of, batch_size)
        elif last_batch != "keep":
            raise ValueError(f"last_batch must be 'keep' or 'merge', got {last_batch!r}")
        for chunks in chunks_of:
            images = [random_crop_flip(self.images[idx], self.padding, self.hflip, generator) for idx in chunks]
            if len(chunks) == 1:
                idx, images = chunks[0], images[0]
            else:
                idx, images = torch.cat(chunks), torch.cat(images)
            yield self.normalize(images), self.labels[idx], self.position[idx]


LAST_BATCH = ("keep", "merge")


def merge_short_last(batches: Iterator[tuple[torch.Tensor, ...]], batch_size: int):
    """`last_batch: merge`: the epoch's batches (each a tuple of index chunks, `TrainStream.batch_chunks`) with a
    last batch of fewer than batch_size / 2 images appended to the batch before it, so no step sees a few
    images alone; every other batch, and every image of the epoch, is unchanged (none dropped, unlike PyTorch's
    `drop_last`). Why: losses that scale like 1/B (PKT, SP) take a far larger step on a 3-image last batch
    (1,347 digits at batch 64) than on the others (bench/last_batch.py). The merged batch has between
    batch_size and 1.5·batch_size images. No random numbers are drawn and no chunk's augmentation changes."""
    held = []  # two batches held back: the last is known only when the iterator ends
    for chunks in batches:
        held.append(chunks)
        if len(held) == 3:
            yield held.pop(0)
    if len(held) == 2 and sum(len(c) for c in held[1]) < batch_size / 2:
        yield held[0] + held[1]
    else:
        yield from held


def batch_indices(order: torch.Tensor, batch_size: int, last_batch: str = "keep") -> list[list[int]]:
    """The epoch `order` (CPU, long) cut into batches of `batch_size`: a last batch of one image joins the batch
    before it (no step on one image, as TrainStream); with `last_batch: merge` a last batch smaller than
    batch_size / 2 does (`merge_short_last`'s rule). Every image of the order once, in order. Used by the streamed
    datasets (`mcmikd.streaming`) and by the multi-process check of the smallest batch (`smallest_batch`)."""
    if last_batch not in LAST_BATCH:
        raise ValueError(f"last_batch must be 'keep' or 'merge', got {last_batch!r}")
    idx = order.tolist()
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    if len(batches) >= 2:
        short = len(batches[-1]) < batch_size / 2 if last_batch == "merge" else len(batches[-1]) == 1
        if short:
            last = batches.pop()
            batches[-1] = batches[-1] + last
    if batches and len(batches[0]) < 2:
        raise ConfigError("an epoch holds only one training image; a training step needs two")
    return batches


@dataclass
class Evaluation:
    acc: float
    per_class_acc: list[float]
    confusion: list[list[int]]
    cmi: float
    loss: float


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, normalize: Normalizer, runtime: Runtime,
            batch_size: int = 500) -> torch.Tensor:
    """Logits (float32, on the device) of `model` in eval mode for uint8 `images`."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start:start + batch_size].to(runtime.device))
        with runtime.autocast():
            out.append(model(batch).float())
    return torch.cat(out)


def evaluate(model, images, labels, normalize, runtime, num_classes: int) -> Evaluation:
    """Accuracy, per-class accuracy (%), confusion (true × predicted), CMI (nats) and CE loss of `model` on
    `images` (uint8) and `labels`, computed on the device and read back in one transfer."""
    return measure_logits(predict(model, images, normalize, runtime), labels, num_classes)


def measure_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Evaluation:
    """`evaluate`'s record from logits (N, num_classes) float32 on the device and int64 labels (N,): shared with
    the streamed evaluation of `mcmikd.streaming`."""
    labels = labels.to(logits.device)
    pred = logits.argmax(dim=1)
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    support = confusion.sum(dim=1).clamp_min(1)
    probs = F.softmax(logits, dim=1)
    stats = torch.cat([
        ((pred == labels).double().mean() * 100).view(1),
        conditional_mutual_information(probs, labels, num_classes).double().view(1),
        F.cross_entropy(logits, labels).double().view(1),
        confusion.diag().double() / support,
        confusion.flatten().double(),  # counts, exact in float64
    ]).tolist()  # the evaluation's one host read
    per_class = stats[3:3 + num_classes]
    counts = [int(v) for v in stats[3 + num_classes:]]
    return Evaluation(
        acc=stats[0],
        per_class_acc=[100 * v for v in per_class],
        confusion=[counts[i * num_classes:(i + 1) * num_classes] for i in range(num_classes)],
        cmi=stats[1],
        loss=stats[2],
    )


# --------------------------------------------------------------------------------------------- resume state
def fingerprint(job_config: dict) -> str:
    return hashlib.sha256(json.dumps(job_config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResumeFile:
    """An epoch checkpoint kept beside (not among) a job's outputs: Snakemake deletes the outputs of a failed
    job, but this file survives, so the rerun continues where the killed one stopped.

    It holds only plain data (dicts, lists, tensors, numbers, strings, None) and is read with
    `torch.load(..., weights_only=True)`: a file that needs anything else unpickled (e.g. a crafted one with a
    `__reduce__` payload) is refused without running it, reported in one line, and training starts afresh. It
    carries a content record (`mcmikd.io.write_record`) like every intermediate: a checkpoint whose bytes no longer
    match it (a flipped bit, an edit) is ignored the same way, never resumed from.
    """

    def __init__(self, path: str | os.PathLike | None, fingerprint: str):
        self.path = Path(path) if path else None
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        from mcmikd.errors import DamagedFileError
        from mcmikd.io import check_record, read_record

        try:
            record = read_record(self.path)
            damage = check_record(self.path, record) if record is not None else None
        except DamagedFileError as exc:
            damage = str(exc)
        if damage:
            log(f"ignoring damaged checkpoint {self.path} ({damage}); training starts afresh")
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn write cannot happen (atomic rename), but a foreign file can
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            # torch's message spans several lines; keep the one naming the refused global, if there is one
            reason = next((line for line in lines if "global" in line.lower()), lines[0])
            log(f"ignoring unreadable checkpoint {self.path} (not a plain-data torch file: {reason}); "
                f"training starts afresh")
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log(f"ignoring checkpoint {self.path}: it belongs to a different configuration")
            return None
        return state

    def save(self, state: dict) -> None:
        """Write `state` (rank 0 only in a multi-process job: every rank holds the same state)."""
        from mcmikd import distributed

        if self.path is None or not distributed.is_writer():
            return
        from mcmikd.io import torch_save

        torch_save({**state, "fingerprint": self.fingerprint}, self.path)  # its record: see the class docstring

    def clear(self) -> None:
        from mcmikd import distributed
        from mcmikd.io import record_path

        if self.path is not None and distributed.is_writer():
            for path in (self.path, record_path(self.path)):
                if path.exists():
                    path.unlink()


def _rng_state(generator: torch.Generator) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------- the loop
@dataclass
class FitResult:
    history: list[dict]
    best: dict  # the epoch with the highest test accuracy (first on ties), with per-class accuracy and confusion
    last: dict  # the final epoch, likewise
    best_state: dict | None  # objective state at the best epoch (kept only if asked)
    stopped_early: str | None = None
    steps: dict | None = None  # how the training steps ran (`step_record`)


def step_record(runtime: Runtime, counts: dict, capture_failed: str | None) -> dict:
    """The `steps` record of a result: the step mode, how many steps replayed a CUDA graph, how many ran eagerly and
    why (`mcmikd.step`), the reason capture stopped (None if it never did), and on CUDA the peak device memory of
    the job (MiB, `torch.cuda.max_memory_allocated`). Counts cover every phase, over resumes."""
    graph = int(counts.get(STEP_GRAPH, 0))
    eager = {k: int(v) for k, v in sorted(counts.items()) if k != STEP_GRAPH}
    record = {"mode": runtime.compile, "graph_replays": graph, "eager_steps": sum(eager.values()),
              "eager_why": eager, "capture_failed": capture_failed}
    if runtime.device.type == "cuda":
        record["max_memory_mib"] = round(torch.cuda.max_memory_allocated(runtime.device) / 2**20, 1)
    return record


def _epoch_pass(runner: StepRunner, stream: TrainStream, generator, batch_size: int, epoch: int,
                last_batch: str = "keep"):
    """One pass over the stream with `runner` (whose optimizer already has the epoch's lr); returns the mean of
    each named loss term (and "total") and the train accuracy, read from the device once (mcmikd.step).

    In a process group of N ranks (`mcmikd.distributed`) every rank draws the same global batch and trains on its
    contiguous slice of n_r images, with its loss weighted by N·n_r/B (B the global batch): DDP's gradient average
    is then the gradient of the mean over the global batch."""
    from mcmikd import distributed

    runner.start_epoch(epoch)
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1:
        for images, labels, positions, total in rank_slices(stream, generator, batch_size, last_batch, rank, world):
            runner.step(images, labels, positions, generator, scale=world * len(labels) / total)
    else:
        for images, labels, positions in stream.batches(generator, batch_size, last_batch):
            runner.step(images, labels, positions, generator)
    return runner.end_epoch()


def rank_slices(stream, generator, batch_size: int, last_batch: str, rank: int, world: int):
    """(images, labels, positions, B) of rank `rank`'s contiguous slice (`distributed.shard_bounds`) of each global
    batch of one epoch, B the global batch's size. A stream with its own `rank_batches` (the streamed ImageNet
    source: `mcmikd.streaming.StreamSource`) makes only the slice (each process decodes only its images); otherwise
    every rank makes the whole global batch from the same generator and keeps its slice (an in-memory
    `TrainStream`, whose augmentation draws from that generator for the whole batch)."""
    from mcmikd import distributed

    if hasattr(stream, "rank_batches"):
        yield from stream.rank_batches(generator, batch_size, last_batch, rank, world)
        return
    for images, labels, positions in stream.batches(generator, batch_size, last_batch):
        total = len(labels)
        start, stop = distributed.shard_bounds(total, rank, world)
        yield images[start:stop], labels[start:stop], positions[start:stop], total


def smallest_batch(stream: TrainStream, recipe: Recipe) -> int | None:
    """The fewest images a training batch of `stream` under `recipe` holds, known before training when no class is
    omitted (the batches' sizes then depend only on the epoch length: `batch_indices` of an epoch, the rule of
    `TrainStream.batch_chunks` and `merge_short_last`); None with omitted classes (then they vary with the epoch
    order)."""
    if stream.omitted:
        return None
    return min(map(len, batch_indices(torch.arange(stream.epoch_length), recipe.batch_size, recipe.last_batch)))


def divergence(means: dict[str, float], where: str) -> str | None:
    """A one-line "diverged: ..." reason when an epoch's mean loss terms (`means`, as `_epoch_pass` returns
    them, with "total") hold a non-finite value, naming the terms and `where` (e.g. "epoch 3"); else None."""
    bad = [k for k, v in means.items() if k != "total" and not math.isfinite(v)]
    if not bad and math.isfinite(means.get("total", 0.0)):
        return None
    which = ", ".join(f"{k} = {means[k]}" for k in bad or ["total"])
    return f"diverged: non-finite training loss ({which}) in {where}"


def _eval_fields(ev: Evaluation) -> dict:
    return {"test_acc": ev.acc, "test_loss": ev.loss, "test_cmi": ev.cmi}


def fit(objective, stream: TrainStream, recipe: Recipe, *, evaluator: Callable[[], Evaluation], runtime: Runtime,
        seed: int, resume: ResumeFile, keep_best_state: bool = False,
        epoch_hook: Callable[[dict], str | None] | None = None) -> FitResult:
    """Train `objective` (a Distiller-like module) with SGD under `recipe`, evaluating after every epoch.

    `epoch_hook(record)` may return a reason string to stop early (e.g. a collapsed MCMI teacher).
    Two optional methods of `objective` run in the main phase: `before_epoch(epoch)` before each epoch's training
    pass (e.g. MCMI's per-epoch centroids), and `epoch_diagnostics()` after its evaluation, whose dict is merged
    into the epoch's record; both must draw no random numbers from the training generator and leave the model's
    state as they found it, so the training run is the same with or without them.
    An epoch (init or main) whose mean training loss or any loss term is NaN/±inf stops the run with
    `stopped_early` = `divergence(...)` ("diverged: ..."); that epoch is evaluated and recorded (it is `last`,
    and `best` only if no earlier epoch exists), and the hook is not called for it.
    """
    generator = make_generator(seed, runtime.device)
    params = objective.learnable_parameters()
    optimizer = make_optimizer(params, recipe)
    init = objective.init_stage() if hasattr(objective, "init_stage") else None
    init_optimizer = None
    if init is not None and init.epochs > 0:
        init_optimizer = make_optimizer(init.parameters, Recipe.from_dict(asdict(recipe), lr=init.lr or recipe.lr))

    forward = None
    if runtime.processes > 1:
        from mcmikd import distributed

        if init_optimizer is not None:  # refused at parse time (methods without `multiprocess = True`)
            raise ConfigError("a method with an init stage cannot train as several processes; use runtime.processes: 1")
        smallest = smallest_batch(stream, recipe)
        if smallest is not None and smallest < runtime.processes:
            raise ConfigError(f"the last training batch of each epoch holds {smallest} images ({stream.epoch_length} "
                              f"per epoch, batch_size {recipe.batch_size}), too few for runtime.processes = "
                              f"{runtime.processes}; use last_batch: merge, another batch_size or fewer processes")
        if not distributed.active():
            raise RuntimeError("runtime.processes > 1 outside a process group; run the job through "
                               "mcmikd.distributed.multiprocess")
        forward = distributed.wrap_ddp(objective, runtime.device)
    main_runner = StepRunner(objective, optimizer, runtime, mode=runtime.compile, forward=forward)

    history: list[dict] = []
    best: dict | None = None
    last: dict | None = None
    best_state = None
    phase, start_epoch = "init" if init_optimizer else "main", 1
    stopped = None
    step_counts: Counter = Counter()
    capture_failed: str | None = None
    state = resume.load()
    if state is not None:
        objective.load_checkpoint_state(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        if init_optimizer is not None and state.get("init_optimizer"):
            init_optimizer.load_state_dict(state["init_optimizer"])
        _set_rng_state(generator, state["rng"])
        history, best, last = state["history"], state["best"], state["last"]
        best_state = state.get("best_state")
        phase, start_epoch = state["next_phase"], state["next_epoch"]
        stopped = state.get("stopped")
        step_counts.update(state.get("steps", {}).get("counts", {}))
        capture_failed = state.get("steps", {}).get("capture_failed")
        log(f"resumed from {resume.path}: {phase} phase, epoch {start_epoch}")

    def take_steps(runner: StepRunner) -> None:  # after each epoch: its steps join the run's counts
        nonlocal capture_failed
        step_counts.update(runner.counts)
        runner.counts.clear()
        capture_failed = capture_failed or runner.capture_failed

    def checkpoint(next_phase: str, next_epoch: int) -> None:
        resume.save({"objective": objective.checkpoint_state(), "optimizer": optimizer.state_dict(),
                     "init_optimizer": init_optimizer.state_dict() if init_optimizer else None,
                     "rng": _rng_state(generator), "history": history, "best": best, "last": last,
                     "best_state": best_state, "stopped": stopped,
                     "steps": {"counts": dict(step_counts), "capture_failed": capture_failed},
                     "next_phase": next_phase, "next_epoch": next_epoch})

    progress.started(phase, start_epoch - 1, init.epochs if phase == "init" else recipe.epochs,
                     later=recipe.epochs if phase == "init" else 0, test_acc=(last or {}).get("test_acc"),
                     best_acc=(best or {}).get("test_acc"), stopped=stopped)
    if phase == "init":
        init_runner = StepRunner(objective, init_optimizer, runtime, loss_fn=init.loss, mode=runtime.compile)
        for epoch in range(start_epoch, init.epochs + 1):
            t0 = time.perf_counter()
            objective.train()
            means, _ = _epoch_pass(init_runner, stream, generator, recipe.batch_size, epoch,
                                   recipe.last_batch)
            take_steps(init_runner)
            record = {"phase": "init", "epoch": epoch, "train": means}
            log(f"init epoch {epoch}/{init.epochs} loss {means['total']:.4f}")
            stopped = divergence(means, f"init epoch {epoch}")
            if stopped:  # no main phase; the student as it is now is the result
                ev = evaluator()
                record.update(_eval_fields(ev))
                best = last = {**record, "per_class_acc": ev.per_class_acc, "confusion": ev.confusion}
                log(f"stopping early: {stopped}")
            history.append({**record, "seconds": time.perf_counter() - t0})
            progress.epoch_done("init", epoch, init.epochs, history[-1]["seconds"],
                                later=recipe.epochs, stopped=stopped)
            if epoch == init.epochs or stopped:
                phase, start_epoch, init_runner = "main", 1, None  # its graphs (if any) are freed
                checkpoint("main", 1)
                if stopped:
                    break
            else:
                checkpoint("init", epoch + 1)

    for epoch in range(start_epoch, recipe.epochs + 1 if not stopped else start_epoch):
        t0 = time.perf_counter()
        lr = recipe.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if hasattr(objective, "before_epoch"):
            objective.before_epoch(epoch)
        objective.train()
        means, train_acc = _epoch_pass(main_runner, stream, generator, recipe.batch_size, epoch,
                                          recipe.last_batch)
        take_steps(main_runner)
        diverged = divergence(means, f"epoch {epoch}")
        ev = evaluator()
        record = {"phase": "main", "epoch": epoch, "lr": lr, "train": means, "train_acc": train_acc,
                  **_eval_fields(ev)}
        if hasattr(objective, "epoch_diagnostics"):
            record.update(objective.epoch_diagnostics())
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        last = {**record, "per_class_acc": ev.per_class_acc, "confusion": ev.confusion}
        log(f"epoch {epoch}/{recipe.epochs} lr {lr:.4g} loss {means['total']:.4f} train {train_acc:.2f} "
            f"test {ev.acc:.2f} ({record['seconds']:.1f}s)")
        if best is None or (ev.acc > best["test_acc"] and not diverged):
            best = last
            if keep_best_state:
                best_state = {k: v.detach().clone().cpu() for k, v in objective.checkpoint_state().items()}
        if diverged:
            stopped = diverged
        elif epoch_hook is not None:
            stopped = epoch_hook(record)
        checkpoint("main", epoch + 1)
        progress.epoch_done("main", epoch, recipe.epochs, record["seconds"], test_acc=ev.acc,
                            best_acc=best["test_acc"], stopped=stopped)
        if stopped:
            log(f"stopping early: {stopped}")
            break
    return FitResult(history=history, best=best, last=last, best_state=best_state, stopped_early=stopped,
                     steps=step_record(runtime, step_counts, capture_failed))


def summarize(result: FitResult) -> dict:
    """Compact metrics for a result file: best/last accuracies, per-class accuracy, confusion (sparse:
    `mcmikd.confusion`), curves."""
    from mcmikd.confusion import encode as encode_confusion

    return {
        "best_acc": result.best["test_acc"], "best_epoch": result.best["epoch"],
        "last_acc": result.last["test_acc"], "last_epoch": result.last["epoch"],
        "per_class_acc_best": result.best["per_class_acc"], "per_class_acc_last": result.last["per_class_acc"],
        "confusion_best": encode_confusion(result.best["confusion"]),  # sparse (mcmikd.confusion)
        "confusion_last": encode_confusion(result.last["confusion"]),
        "test_cmi_last": result.last["test_cmi"],
        "stopped_early": result.stopped_early,
        "steps": result.steps,
        "history": result.history,
    }
