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
    "cifar10": "mcmikd.datasets.cifar10:CIFAR10",
    "cifar100": "mcmikd.datasets.cifar100:CIFAR100",
    "imagefolder": "mcmikd.datasets.imagefolder:ImageFolder",
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


@functools.lru_cache(maxsize=None)
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
    split_seed, download, verify_checksums); those the dataset does not use are ignored. Raises DataError for
    an unknown name or missing/corrupt data, TypeError for a keyword no dataset knows."""
    from mcmikd.errors import ConfigError, DataError

    try:
        spec = get_dataset(name)
    except ConfigError as err:
        raise DataError(str(err)) from None
    known = {key for entry in DATASETS for key in get_dataset(entry).config_keys}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"load_dataset() got unknown dataset keyword(s) {unknown}; known: {sorted(known)}")
    return spec.load(**{k: v for k, v in params.items() if k in spec.config_keys})
