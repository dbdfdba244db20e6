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

`prepare_data` writes a `StreamedDataset` (file lists and labels) where other datasets write a `DatasetTensors`;
`DatasetTensors.from_file` returns it, and the jobs train through `StreamSource` (`mcmikd.jobs.common.make_stream`)
and evaluate through `evaluate_stream`. Not supported here (a ConfigError where a config asks for them): few-shot
pools, omitted classes; the in-memory random-crop padding (`augment.crop_padding`) does not apply. DataLoader
workers per job: its thread count (`runtime.threads`). Multi-process training: each process decodes only its slice
of every global batch (`StreamSource.rank_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from mcmikd.augment import Normalizer
from mcmikd.engine import batch_indices
from mcmikd.errors import DataError

_SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio · 2⁶⁴), spreads consecutive indices


def sample_seed(epoch_seed: int, index: int) -> int:
    """Seed of the augmentation draws of training image `index` in the epoch whose seed is `epoch_seed`
    (a 63-bit integer): a fixed mix of the two, the same in every worker and process."""
    return (epoch_seed ^ ((index + 1) * _SEED_MIX)) & 0x7FFF_FFFF_FFFF_FFFF


def train_transform(size: int = 224, hflip: bool = True):
    """RandomResizedCrop(size) + RandomHorizontalFlip (unless `hflip` is off), uint8 (3, H, W) in, uint8
    (3, size, size) out."""
    from torchvision.transforms import v2

    flip = [v2.RandomHorizontalFlip()] if hflip else []
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), *flip])


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
        with torch.random.fork_rng(devices=[]):  # the CPU generator only (torch.manual_seed would reseed CUDA's)
            torch.random.default_generator.manual_seed(sample_seed(self.epoch_seed, index))
            return self.transform(image), label, index


def _loader_generator() -> torch.Generator:
    """A DataLoader's own generator: its iterator draws a worker base seed, which would otherwise come from (and
    advance) the global RNG; the draws that matter are seeded per image (`sample_seed`)."""
    return torch.Generator().manual_seed(0)


def _collate(items):
    images, labels, indices = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long)


class FileImages:
    """Images of a file list addressed like a uint8 tensor (N, 3, S, S): `images[idx]` (an int, a slice, or a list
    or tensor of indices) decodes those files with `transform` in this process (random access for a few images,
    e.g. the Eigen-CAM job's; whole passes go through DataLoader workers: `predict_files`)."""

    def __init__(self, files: list[str], transform, size: int):
        self.files, self.transform, self.size = files, transform, size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size, self.size)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, int):
            return self.transform(decode(self.files[idx]))
        picks = range(len(self.files))[idx] if isinstance(idx, slice) else torch.as_tensor(idx).flatten().tolist()
        return torch.stack([self.transform(decode(self.files[i])) for i in picks])


class StreamedDataset:
    """What `prepare_data` writes for a streamed dataset (`DatasetSpec.streams`) in place of a `DatasetTensors`:
    the file lists and labels of both splits, the normalisation and class names. It answers what the jobs ask of a
    `DatasetTensors` (`num_classes`, `in_channels`, `image_size`, `train_labels`, `test_labels`, `test_images`
    (decoded on access, `FileImages`), `evaluation_record`) and is trained on through `StreamSource`."""

    streamed = True
    in_channels = 3

    def __init__(self, *, name: str, train_files: list[str], train_labels: torch.Tensor, test_files: list[str],
                 test_labels: torch.Tensor, mean, std, class_names: list[str], hflip: bool = True,
                 image_size: int = 224, resize: int = 256, info: dict | None = None):
        self.name, self.train_files, self.test_files = name, list(train_files), list(test_files)
        self.train_labels = torch.as_tensor(train_labels, dtype=torch.long)
        self.test_labels = torch.as_tensor(test_labels, dtype=torch.long)
        self.mean, self.std = tuple(mean), tuple(std)
        self.class_names, self.hflip = list(class_names), bool(hflip)
        self.image_size, self.resize = int(image_size), int(resize)
        self.info = dict(info or {})
        self.test_images = FileImages(self.test_files, eval_transform(self.resize, self.image_size), self.image_size)

    @classmethod
    def from_index(cls, files, image_size: int = 224, resize: int = 256) -> StreamedDataset:
        """From an `ImageFiles` index (`mcmikd.datasets.imagenet.ImageNet.index`)."""
        return cls(name=files.name, train_files=[p for p, _ in files.train],
                   train_labels=torch.tensor([y for _, y in files.train], dtype=torch.long),
                   test_files=[p for p, _ in files.val], test_labels=torch.tensor([y for _, y in files.val],
                                                                                 dtype=torch.long),
                   mean=files.mean, std=files.std, class_names=files.class_names, hflip=files.hflip,
                   image_size=image_size, resize=resize, info={"streamed": True})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def evaluated_on(self) -> str:
        return "test"

    def evaluation_record(self) -> dict:
        return {}

    def to_file(self, path) -> None:
        from mcmikd.io import torch_save

        torch_save({"streamed": True, "name": self.name, "train_files": self.train_files,
                    "train_labels": self.train_labels, "test_files": self.test_files, "test_labels": self.test_labels,
                    "mean": list(self.mean), "std": list(self.std), "class_names": self.class_names,
                    "hflip": self.hflip, "image_size": self.image_size, "resize": self.resize, "info": self.info},
                   path)

    @classmethod
    def from_payload(cls, payload: dict) -> StreamedDataset:
        return cls(**{k: v for k, v in payload.items() if k != "streamed"})


def loader_workers() -> int:
    """DataLoader worker processes of a job: its thread count (`runtime.threads`, set by `Runtime.from_config`)."""
    return max(1, torch.get_num_threads())


@torch.no_grad()
def predict_files(model: torch.nn.Module, files: list[str], data: StreamedDataset, runtime, *,
                  workers: int | None = None, batch_size: int = 250) -> torch.Tensor:
    """Logits (N, C) float32 on the device of `model` in eval mode for `files` in order, each image Resize +
    CenterCrop (the evaluation transform), decoded in `workers` DataLoader processes."""
    workers = loader_workers() if workers is None else workers
    dataset = FileDataset([(f, 0) for f in files], eval_transform(data.resize, data.image_size))
    normalize = Normalizer(data.mean, data.std, runtime.device, runtime.channels_last)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate, pin_memory=runtime.device.type == "cuda",
                                         generator=_loader_generator())
    model.eval()
    out = []
    for images, _, _ in loader:
        with runtime.autocast():
            out.append(model(normalize(images.to(runtime.device, non_blocking=True))).float())
    return torch.cat(out)


class StreamSource:
    """The training split of a `StreamedDataset` as batches decoded in `workers` DataLoader processes.

    Attributes read by objectives, methods and jobs as on `TrainStream`: `device`, `normalize`, `num_visible` (every
    training image), `visible_labels` (CPU long, file order), `labels` (on the device), `pool` and `position`
    (every image; no few-shot pool), `omitted` (none), `epoch_length` (every training image once: the engine's
    multi-process check of the smallest batch reads it); positions are the file-order indices. `clean_logits` is the
    eval-mode pass over the training images without augmentation (MCMI's centroids, the fine-tuning diagnostics)."""

    omitted: tuple[int, ...] = ()

    def __init__(self, data: StreamedDataset, runtime, *, workers: int | None = None, prefetch: int = 2):
        self.data = data
        self.device = runtime.device
        self.runtime = runtime
        self.workers = loader_workers() if workers is None else int(workers)
        self.prefetch = prefetch
        self.dataset = FileDataset(list(zip(data.train_files, data.train_labels.tolist())),
                                   train_transform(data.image_size, data.hflip))
        self.visible_labels = data.train_labels.clone()
        self.labels = data.train_labels.to(self.device)
        self.pool = torch.arange(len(self.visible_labels))
        self.position = self.pool.to(self.device)
        self.normalize = Normalizer(data.mean, data.std, self.device, runtime.channels_last)

    def clean_logits(self, model: torch.nn.Module, runtime) -> torch.Tensor:
        """Logits (N, C) of `model` in eval mode on every training image, evaluation transform, file order; the
        model's train/eval mode is put back."""
        was_training = model.training
        try:
            return predict_files(model, self.data.train_files, self.data, runtime, workers=self.workers)
        finally:
            model.train(was_training)

    @property
    def num_visible(self) -> int:
        return len(self.visible_labels)

    @property
    def epoch_length(self) -> int:
        return len(self.visible_labels)

    def order(self, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """(epoch order on the CPU, epoch seed): a permutation of the training images and a 63-bit seed, both
        drawn from `generator` (on its own device), which advances by one epoch's draws."""
        n = len(self.visible_labels)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        seed = torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device)
        return perm.cpu(), int(seed.item())

    def loader(self, batches: list[list[int]]):
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", prefetch_factor=self.prefetch if self.workers else None,
            generator=_loader_generator())

    def batches(self, generator: torch.Generator, batch_size: int,
                last_batch: str = "keep") -> Iterator[tuple[torch.Tensor, ...]]:
        """(normalised augmented images (B, 3, S, S) float, labels (B,) long, positions (B,) long) per batch of
        one epoch, on the device; the same contract as `TrainStream.batches`."""
        for images, labels, index, _ in self.rank_batches(generator, batch_size, last_batch, 0, 1):
            yield images, labels, index

    def rank_batches(self, generator: torch.Generator, batch_size: int, last_batch: str, rank: int,
                     world: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """`batches` cut for rank `rank` of `world` processes: (images, labels, positions) of its contiguous slice
        of each global batch (`mcmikd.distributed.shard_bounds`), with the global batch's size. Only the slice is
        decoded: each image's augmentation is seeded by the epoch seed and its position, not by the batch it is in,
        so the slices are the images the whole global batch would hold (`mcmikd.engine.rank_slices`)."""
        from mcmikd.distributed import shard_bounds

        order, seed = self.order(generator)
        self.dataset.epoch_seed = seed  # read by the workers, which start with this epoch's loader
        batches = batch_indices(order, batch_size, last_batch)
        slices = [batch[slice(*shard_bounds(len(batch), rank, world))] for batch in batches]
        for (images, labels, index), batch in zip(self.loader(slices), batches, strict=True):
            images = images.to(self.device, non_blocking=True)
            yield (self.normalize(images), labels.to(self.device, non_blocking=True),
                   index.to(self.device, non_blocking=True), len(batch))


@torch.no_grad()
def evaluate_stream(model: torch.nn.Module, data: StreamedDataset, runtime, *, workers: int | None = None,
                    batch_size: int = 250):
    """`mcmikd.engine.evaluate`'s record (accuracy, per-class accuracy, confusion, CMI, CE loss) over the streamed
    test split: logits are gathered on the device (50,000 × 1000 float32 = 200 MB for ImageNet) and measured in one
    pass, so the numbers are those `evaluate` gives for the same preprocessed images."""
    from mcmikd.engine import measure_logits

    logits = predict_files(model, data.test_files, data, runtime, workers=workers, batch_size=batch_size)
    return measure_logits(logits, data.test_labels, data.num_classes)
