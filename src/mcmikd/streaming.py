"""Training and evaluation batches decoded from image files in DataLoader workers, for datasets too large to hold
in memory (`DatasetSpec.streams`: ImageNet). `StreamSource` has the role of `mcmikd.engine.TrainStream`: it
yields (normalised augmented images, labels, positions) batches on the training device, in an order drawn from
the fit's seeded `torch.Generator`, so an epoch checkpoint (which saves that generator's state) resumes at the
next epoch boundary exactly.

Reproducibility does not depend on the number of workers: each epoch draws its order and one 63-bit epoch seed
from the generator (on the generator's device, as TrainStream does), and every image's augmentation draws come
from a CPU generator seeded with (epoch seed, image index) (`sample_seed`); the workers only decode. Transforms
are torchvision.transforms.v2 on uint8 tensors: training RandomResizedCrop(224, scale (0.08, 1), ratio
(3/4, 4/3), bilinear with antialias) and RandomHorizontalFlip(0.5) (Szegedy et al. 2015's crop, torchvision's
ImageNet reference recipe); evaluation Resize(256) + CenterCrop(224). Normalisation runs on the device
(`mcmikd.augment.Normalizer`), as for in-memory data.

Not supported here (a ConfigError where a config asks for them): few-shot pools, omitted classes, the
in-memory random-crop padding. Multi-process training: `StreamSource.shard` is the one place that picks which
part of an epoch's order a process sees (identity today); a rank-sharding sampler replaces it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from mcmikd.augment import Normalizer
from mcmikd.errors import ConfigError, DataError

_SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio · 2⁶⁴), spreads consecutive indices


def sample_seed(epoch_seed: int, index: int) -> int:
    """Seed of the augmentation draws of training image `index` in the epoch whose seed is `epoch_seed`
    (a 63-bit integer): a fixed mix of the two, the same in every worker and process."""
    return (epoch_seed ^ ((index + 1) * _SEED_MIX)) & 0x7FFF_FFFF_FFFF_FFFF


def train_transform(size: int = 224):
    """RandomResizedCrop(size) + RandomHorizontalFlip, uint8 (3, H, W) in, uint8 (3, size, size) out."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(resize: int = 256, crop: int = 224):
    """Resize (shorter side to `resize`) + CenterCrop(`crop`), uint8 (3, H, W) in, uint8 (3, crop, crop) out."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


def decode(path: str | Path) -> torch.Tensor:
    """One image file as uint8 (3, H, W) RGB at its own size (`mcmikd.datasets.imagefolder.to_rgb8`'s decoding).
    One-line DataError for an unreadable file."""
    import numpy as np
    from PIL import Image

    from mcmikd.datasets.imagefolder import to_rgb8

    try:
        with Image.open(path) as img:
            return torch.from_numpy(np.asarray(to_rgb8(img, Path(path)), dtype=np.uint8).transpose(2, 0, 1).copy())
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"corrupt image {path} ({type(exc).__name__}); remove or replace it") from None


class FileDataset(torch.utils.data.Dataset):
    """(path, label) pairs served as (uint8 image (3, S, S), label, index). With `epoch_seed` set (training), the
    transform's random draws for item i come from `sample_seed(epoch_seed, i)`; the caller's and the worker's
    global RNG state is left as it was."""

    def __init__(self, files: list[tuple[str, int]], transform):
        self.files = files
        self.transform = transform
        self.epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        image = decode(path)
        if self.epoch_seed is None:
            return self.transform(image), label, index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.epoch_seed, index))
            return self.transform(image), label, index


def _collate(items):
    images, labels, indices = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long)


def batch_indices(order: torch.Tensor, batch_size: int, last_batch: str = "keep") -> list[list[int]]:
    """The epoch `order` (CPU, long) cut into batches of `batch_size`: a last batch of one image joins the batch
    before it (no step on one image, as TrainStream); with `last_batch: merge` a last batch smaller than
    batch_size / 2 does (`mcmikd.engine.merge_short_last`'s rule). Every image of the order once, in order."""
    if last_batch not in ("keep", "merge"):
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


class StreamSource:
    """The training split of an `ImageFiles` index as batches decoded in `workers` DataLoader processes.

    Attributes read by objectives and methods as on `TrainStream`: `device`, `normalize`, `num_visible` (every
    training image), `visible_labels` (CPU long, file order); positions are the file-order indices."""

    def __init__(self, files, runtime, *, workers: int = 8, size: int = 224, prefetch: int = 2):
        self.files = files
        self.device = runtime.device
        self.workers = int(workers)
        self.prefetch = prefetch
        self.dataset = FileDataset(files.train, train_transform(size))
        self.visible_labels = torch.tensor(files.train_labels, dtype=torch.long)
        self.normalize = Normalizer(files.mean, files.std, self.device, runtime.channels_last)

    @property
    def num_visible(self) -> int:
        return len(self.visible_labels)

    def order(self, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """(epoch order on the CPU, epoch seed): a permutation of the training images and a 63-bit seed, both
        drawn from `generator` (on its own device), which advances by one epoch's draws."""
        n = len(self.visible_labels)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        seed = torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device)
        return perm.cpu(), int(seed.item())

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """The part of the epoch order this process trains on: all of it. Hook for multi-process training (a
        rank's slice, e.g. `order[rank::world]`, padded to equal lengths, belongs here)."""
        return order

    def loader(self, batches: list[list[int]]):
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", prefetch_factor=self.prefetch if self.workers else None)

    def batches(self, generator: torch.Generator, batch_size: int,
                last_batch: str = "keep") -> Iterator[tuple[torch.Tensor, ...]]:
        """(normalised augmented images (B, 3, S, S) float, labels (B,) long, positions (B,) long) per batch of
        one epoch, on the device; the same contract as `TrainStream.batches`."""
        order, seed = self.order(generator)
        self.dataset.epoch_seed = seed  # read by the workers, which start with this epoch's loader
        for images, labels, index in self.loader(batch_indices(self.shard(order), batch_size, last_batch)):
            images = images.to(self.device, non_blocking=True)
            yield (self.normalize(images), labels.to(self.device, non_blocking=True),
                   index.to(self.device, non_blocking=True))


def eval_batches(files, runtime, *, workers: int = 8, batch_size: int = 250, resize: int = 256,
                 crop: int = 224) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(normalised images, labels) of the validation split in file order, Resize + CenterCrop, on the device."""
    dataset = FileDataset(files.val, eval_transform(resize, crop))
    normalize = Normalizer(files.mean, files.std, runtime.device, runtime.channels_last)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate, pin_memory=runtime.device.type == "cuda")
    for images, labels, _ in loader:
        yield normalize(images.to(runtime.device, non_blocking=True)), labels.to(runtime.device, non_blocking=True)


@torch.no_grad()
def evaluate_stream(model: torch.nn.Module, files, runtime, *, workers: int = 8, batch_size: int = 250):
    """`mcmikd.engine.evaluate`'s record (accuracy, per-class accuracy, confusion, CMI, CE loss) over the streamed
    validation split: logits are gathered on the device (50,000 × 1000 float32 = 200 MB for ImageNet) and
    measured in one pass, so the numbers are those `evaluate` gives for the same preprocessed images."""
    from mcmikd.engine import measure_logits

    model.eval()
    logits, labels = [], []
    for images, y in eval_batches(files, runtime, workers=workers, batch_size=batch_size):
        with runtime.autocast():
            logits.append(model(images).float())
        labels.append(y)
    return measure_logits(torch.cat(logits), torch.cat(labels), files.num_classes)
