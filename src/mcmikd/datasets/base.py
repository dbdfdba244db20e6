"""What every dataset plug-in declares (`DatasetSpec`), readable without importing torch or numpy."""

from __future__ import annotations

from typing import ClassVar


class DatasetSpec:
    """A dataset: its declared facts (class attributes) and its loader (`load`).

    Subclasses set the class attributes and implement `load`; those whose classes are known only with the
    data (image folders) override `class_names_of`. All methods except `load` take the config's `dataset:`
    block (`ds`, defaults filled in) and read no image.
    """

    name: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...] | None] = None  # label order; None: known only with the data
    in_channels: ClassVar[int] = 3
    hflip: ClassVar[bool] = True  # whether a horizontal flip keeps the class
    mean: ClassVar[tuple[float, ...] | None] = None  # per channel in [0, 1]; None: computed from the train split
    std: ClassVar[tuple[float, ...] | None] = None
    checksums: ClassVar[dict[str, str]] = {}  # file name -> expected md5 (published values)
    config_keys: ClassVar[tuple[str, ...]] = ()  # keys of the `dataset:` block the loader uses (besides name)
    fixed_image_size: ClassVar[int | None] = None  # side of every image, when the dataset fixes it
    streams: ClassVar[bool] = False  # True: decoded per batch from files (mcmikd.streaming), never loaded whole

    @classmethod
    def params(cls, ds: dict) -> dict:
        """The `dataset:` keys this dataset uses, in config order: a job's params, so changing any other key
        reruns nothing. `validation` (a held-out part of the training set, applied by `load_dataset` for every
        dataset) is included when it is set."""
        return {k: v for k, v in ds.items()
                if k == "name" or k in cls.config_keys or (k == "validation" and v is not None)}

    @classmethod
    def class_names_of(cls, ds: dict) -> list[str] | None:
        """Class names in label order, None while they cannot be known (no data yet)."""
        return list(cls.class_names) if cls.class_names is not None else None

    @classmethod
    def num_classes_of(cls, ds: dict) -> int | None:
        names = cls.class_names_of(ds)
        return None if names is None else len(names)

    @classmethod
    def image_size_of(cls, ds: dict) -> int:
        return cls.fixed_image_size or int(ds["image_size"])

    @classmethod
    def num_train(cls, ds: dict) -> int | None:
        """Number of training images, when known without loading them (cost estimates); None otherwise."""
        return None

    @classmethod
    def check(cls, ds: dict) -> None:
        """Check the data are where the config says (before any job runs); one-line DataError if not."""

    @classmethod
    def data_folder(cls, ds: dict) -> str | None:
        """The folder the data are read from (a dry run without it skips the checks that need it); None for
        bundled data."""
        return None

    @classmethod
    def shape(cls, ds: dict) -> tuple[int, int, int]:
        """(num_classes, in_channels, image_size) without loading the data. DataError when the class count
        needs data that are missing."""
        from mcmikd.errors import DataError

        n = cls.num_classes_of(ds)
        if n is None:
            raise DataError(f"the number of classes of dataset '{cls.name}' is unknown until its data exist "
                            f"(dataset.root is '{ds.get('root')}')")
        return n, cls.in_channels, cls.image_size_of(ds)

    @classmethod
    def load(cls, **params):
        """The dataset as a `mcmikd.data.DatasetTensors` (uint8 images (N, C, H, W), int64 labels).
        `params` are the keys in `config_keys`. Raises DataError for missing or corrupt data."""
        raise NotImplementedError
