"""Datasets as tensors: scikit-learn's digits (bundled), CIFAR-10/100 (standard python folders), image folders.

Every loader returns a `DatasetTensors` record: uint8 images (N, C, H, W) in file order, int64 labels, the
normalisation constants and the class names. Training code keeps these on the training device and augments
whole batches there (`mcmikd.augment`). The datasets themselves are plug-ins in `mcmikd.datasets` (one module
each, registered in `mcmikd.datasets.DATASETS`); `load_dataset` dispatches to them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mcmikd.datasets import DATASETS, get_dataset
from mcmikd.datasets._cifar import safe_unpickle  # noqa: F401 - the safe CIFAR reader, for callers
from mcmikd.datasets.cifar10 import CIFAR10
from mcmikd.datasets.cifar100 import CIFAR100
from mcmikd.datasets.digits import load_digits  # noqa: F401 - public loader, kept importable from here
from mcmikd.datasets.imagefolder import IMAGE_SUFFIXES, load_image_folder  # noqa: F401 - likewise
from mcmikd.errors import ConfigError, DataError

# The CIFAR facts, now declared by the plug-ins, under their former names here.
CIFAR_STATS = {spec.name: (spec.mean, spec.std) for spec in (CIFAR10, CIFAR100)}
CIFAR_FOLDERS = {spec.name: spec.folder for spec in (CIFAR10, CIFAR100)}
CIFAR_FILES = {spec.name: dict(spec.checksums) for spec in (CIFAR10, CIFAR100)}


@dataclass
class DatasetTensors:
    """A loaded dataset: uint8 images (N, C, H, W) and int64 labels (N,) per split, per-channel mean/std in
    [0, 1], class names in label order, whether flips keep the class, and provenance (`info`)."""

    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W), file order
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    hflip: bool  # whether horizontal flips preserve the label (False for digits)
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def to_file(self, path) -> None:
        from mcmikd.io import torch_save

        torch_save(asdict(self), path)

    @classmethod
    def from_file(cls, path) -> "DatasetTensors":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(f"prepared dataset {path} is missing; rerun the workflow to rebuild it") from None
        except Exception as exc:
            raise DataError(f"prepared dataset {path} is unreadable ({exc}); delete it and rerun") from None
        payload["mean"], payload["std"] = tuple(payload["mean"]), tuple(payload["std"])
        return cls(**payload)


def load_dataset(name: str, **params) -> DatasetTensors:
    """Load dataset `name` (a key of `mcmikd.datasets.DATASETS`: digits | cifar10 | cifar100 | imagefolder) as
    uint8 tensors. `params` are keys of the config's `dataset:` block (root, image_size, test_fraction,
    split_seed, download, verify_checksums); those the dataset does not use are ignored. Raises DataError for
    an unknown name or missing/corrupt data, TypeError for a keyword no dataset knows."""
    try:
        spec = get_dataset(name)
    except ConfigError as err:
        raise DataError(str(err)) from None
    known = {key for entry in DATASETS for key in get_dataset(entry).config_keys}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"load_dataset() got unknown dataset keyword(s) {unknown}; known: {sorted(known)}")
    return spec.load(**{k: v for k, v in params.items() if k in spec.config_keys})


def cifar_folder(name: str, root: str | Path) -> Path:
    """`<root>/cifar-10-batches-py` or `<root>/cifar-100-python`."""
    return get_dataset(name).path(root)


def load_cifar(name: str, root: str | Path, download: bool = False, verify_checksums: bool = True) -> DatasetTensors:
    """Read the standard `cifar-10-batches-py` / `cifar-100-python` folder under `root` (file order kept)."""
    return get_dataset(name).load(root=root, download=download, verify_checksums=verify_checksums)


def fewshot_subset(labels: torch.Tensor, fraction: float, mode: str = "first_n", seed: int = 0) -> torch.Tensor:
    """Indices of the training images a few-shot student may see.

    * `first_n` (the official code): the first ⌊fraction·N⌋ images in file order, whatever their class.
    * `stratified`: ⌊fraction·N_c⌋ images of every class c (at least one), drawn with `seed`.
    """
    n = len(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if mode == "first_n":
        return torch.arange(max(1, int(fraction * n)))
    if mode == "stratified":
        gen = torch.Generator().manual_seed(int(seed))
        picks = []
        for c in torch.unique(labels):
            members = torch.nonzero(labels == c).flatten()
            k = max(1, int(fraction * len(members)))
            picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
        return torch.sort(torch.cat(picks)).values
    raise ValueError(f"unknown few-shot subset mode '{mode}'; use first_n or stratified")
