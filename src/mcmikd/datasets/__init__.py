"""Datasets as plug-ins (mdistiller's shape, like `mcmikd.distill.METHODS`).

`DATASETS` maps each config name (`dataset.name`) to "module:Class", a `DatasetSpec` subclass that declares
the dataset's classes, channels, normalisation, checksums and config keys, and loads it. Everything here can
be read without importing torch or numpy (the Snakefile validates the config at parse time); only loading
imports them. A new dataset is one file in this package plus one line here (no schema edit, as long as it
uses the existing keys of the config's `dataset:` block).
"""

from __future__ import annotations

import functools
from pathlib import Path

DATASETS: dict[str, str] = {
    "digits": "mcmikd.datasets.digits:Digits",
    "cluttered_digits": "mcmikd.datasets.cluttered_digits:ClutteredDigits",
    "cluttered_numbers": "mcmikd.datasets.cluttered_numbers:ClutteredNumbers",
    "cifar10": "mcmikd.datasets.cifar10:CIFAR10",
    "cifar100": "mcmikd.datasets.cifar100:CIFAR100",
    "imagefolder": "mcmikd.datasets.imagefolder:ImageFolder",
    "imagenet": "mcmikd.datasets.imagenet:ImageNet",
}


def get_dataset(name: str):
    """The `DatasetSpec` subclass registered under `name`. Raises a one-line ConfigError for an unknown name."""
    from mcmikd.registry import lookup

    return lookup(DATASETS, name, "dataset")


def num_classes(ds_config: dict) -> int | None:
    """Number of classes of the configured dataset (the config's `dataset:` block), None while unknown
    (an image folder that does not exist yet)."""
    return get_dataset(ds_config["name"]).num_classes_of(ds_config)


def class_names(ds_config: dict) -> list[str] | None:
    """Class names in label order of the configured dataset, None while unknown (missing image folder)."""
    return get_dataset(ds_config["name"]).class_names_of(ds_config)


def dataset_params(ds_config: dict) -> dict:
    """The keys of the `dataset:` block the configured dataset uses (its name first, config order kept)."""
    return get_dataset(ds_config["name"]).params(ds_config)


@functools.cache
def dataset_source_files(name: str) -> tuple[str, ...]:
    """Files whose code decides what dataset `name` loads (Snakemake inputs, so an edit reruns prepare_data):
    `mcmikd/data.py` and the module of every class the dataset's spec is built from (its own file, `base.py`,
    shared helpers such as `_cifar.py`). Imports the spec's module, not torch."""
    import inspect

    files = [Path(__file__).parent.parent / "data.py"]
    files += [Path(inspect.getfile(cls)) for cls in reversed(get_dataset(name).__mro__) if cls is not object]
    return tuple(dict.fromkeys(str(p) for p in files))


def load_dataset(name: str, **params):
    """Load dataset `name` (a key of `mcmikd.datasets.DATASETS`: digits | cifar10 | cifar100 | imagefolder) as
    uint8 tensors. `params` are keys of the config's `dataset:` block (root, image_size, test_fraction,
    split_seed, download, verify_checksums, validation); those the dataset does not use are ignored.
    `validation` ({fraction, seed} or None) is applied here, after the dataset's own loader, for every dataset
    alike (`hold_out_validation`). Raises DataError for an unknown name or missing/corrupt data, TypeError for a
    keyword no dataset knows."""
    from mcmikd.errors import ConfigError, DataError

    try:
        spec = get_dataset(name)
    except ConfigError as err:
        raise DataError(str(err)) from None
    known = {key for entry in DATASETS for key in get_dataset(entry).config_keys} | {"validation"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"load_dataset() got unknown dataset keyword(s) {unknown}; known: {sorted(known)}")
    data = spec.load(**{k: v for k, v in params.items() if k in spec.config_keys})
    validation = params.get("validation")
    if validation:
        data = hold_out_validation(data, float(validation["fraction"]), int(validation.get("seed", 0)),
                                   recompute_stats=spec.mean is None)
    return data


def hold_out_validation(data, fraction: float, seed: int = 0, recompute_stats: bool = True):
    """`data` with a seeded, stratified `fraction` of its TRAINING images as the evaluation set and the rest as the
    training set; its test images are dropped, so nothing can be selected on them (config `dataset.validation`).
    Images made from one source image (`info["train_sources"]`, cluttered digits) stay on one side: the draw is
    over sources (stratified by their class), and the per-image boxes and sources follow their images.

    Every class keeps ⌈fraction·N_c⌉ validation images (at least 1, and at least 1 training image); the
    draw is `torch.randperm` per class with a generator seeded by `seed`. Both parts keep file order. The
    returned `DatasetTensors` has `test_images`/`test_labels` = the validation part; `info` records
    `evaluated_on: validation`, the fraction, the seed and the positions (into the original training split) of
    both parts; its test-split index lists are removed. With `recompute_stats` (datasets whose mean/std are
    computed from the training split: digits, image folders) mean/std are recomputed from the remaining training
    images. Raises ValueError for a fraction outside (0, 1) or a class with fewer than 2 training images."""
    import torch

    from mcmikd.canonical import ceil_fraction_of
    from mcmikd.data import DatasetTensors

    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    labels = data.train_labels
    sources = data.info.get("train_sources")  # images made from one source (cluttered digits): one side only
    groups = torch.arange(len(labels)) if sources is None else torch.as_tensor(sources, dtype=torch.long)
    unique, first = torch.unique(groups, return_inverse=True)
    group_label = torch.empty(len(unique), dtype=labels.dtype)
    group_label[first] = labels
    gen = torch.Generator().manual_seed(int(seed))
    held = []
    for c in torch.unique(group_label):
        members = torch.nonzero(group_label == c).flatten()
        if len(members) < 2:
            raise ValueError(f"class {int(c)} has {len(members)} training image(s); a validation split needs 2")
        k = min(max(1, ceil_fraction_of(len(members), fraction)), len(members) - 1)  # exact on the decimal written
        held.append(members[torch.randperm(len(members), generator=gen)[:k]])
    held_groups = unique[torch.cat(held)]
    val_idx = torch.nonzero(torch.isin(groups, held_groups)).flatten()
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    train_idx = torch.nonzero(keep).flatten()
    train_images = data.train_images[train_idx].contiguous()
    mean, std = data.mean, data.std
    if recompute_stats:
        scaled = train_images.float() / 255
        mean = tuple(float(v) for v in scaled.mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in scaled.std(dim=(0, 2, 3)))
    info = {k: v for k, v in data.info.items() if not k.startswith("test_")}
    for key in ("boxes", "sources"):  # per-image records follow their images
        if f"train_{key}" in info:
            per_image = info[f"train_{key}"]
            info[f"train_{key}"] = [per_image[i] for i in train_idx.tolist()]
            info[f"test_{key}"] = [per_image[i] for i in val_idx.tolist()]
    info.update(evaluated_on="validation", validation_fraction=fraction, validation_seed=int(seed),
                validation_positions=val_idx.tolist(), train_positions=train_idx.tolist())
    return DatasetTensors(name=data.name, train_images=train_images, train_labels=labels[train_idx].clone(),
                          test_images=data.train_images[val_idx].contiguous(), test_labels=labels[val_idx].clone(),
                          mean=mean, std=std, class_names=list(data.class_names), hflip=data.hflip, info=info)
