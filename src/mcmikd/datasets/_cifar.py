"""Reading the standard CIFAR "python version" folders (shared by `cifar10` and `cifar100`).

Source: https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009). Each file is a Python pickle of a dict
holding a uint8 'data' array (N, 3072: the R, G and B planes of 32×32 images) and label lists. Pickles can run
code when loaded, so they are read with `SafeUnpickler`, which builds numpy arrays and nothing else: a file
that asks for any other Python object is refused, whether or not checksums are verified.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import ClassVar

from mcmikd.datasets.base import DatasetSpec
from mcmikd.errors import DataError

# The only globals a CIFAR pickle needs: numpy's ndarray reconstruction (under numpy 1's and numpy 2's module
# paths). Two more that build nothing but arrays and bytes let a hand-made folder written by Python 3 load too:
# `_codecs.encode` (how protocol 2 stores the bytes of an array's buffer; a text/bytes codec runs no code) and
# numpy's `_frombuffer` (how numpy stores an array with protocol 5).
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
}


class SafeUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` (numpy arrays); any other global, such as
    `os.system` in a crafted file, raises a one-line DataError before anything runs."""

    path: Path = Path("?")

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(f"mcmikd refuses to load CIFAR file {self.path}: it asks for {module}.{name}, which "
                            f"no CIFAR file needs; replace the folder with the standard download")
        import importlib

        for candidate in ALLOWED_GLOBALS[module, name]:  # numpy 2's own path first (numpy.core is deprecated)
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):  # pragma: no cover - the other numpy major version
                continue
        raise DataError(f"CIFAR file {self.path} needs {module}.{name}, which this numpy lacks; "  # pragma: no cover
                        f"install numpy as environment.yml says")


def safe_unpickle(path: Path) -> dict:
    """A CIFAR pickle at `path` as a dict (latin-1 strings, as Python 2 wrote them). DataError when the file
    is missing, corrupt, not a dict, or asks for anything but numpy arrays."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}; put the standard python version there "
                        f"or set dataset.download: true") from None
    unpickler = SafeUnpickler(io.BytesIO(data), encoding="latin1")
    unpickler.path = Path(path)
    try:
        batch = unpickler.load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"corrupt CIFAR file {path} ({type(exc).__name__}); delete it and download again "
                        f"(dataset.download: true)") from None
    if not isinstance(batch, dict):
        raise DataError(f"corrupt CIFAR file {path} (not a dict); delete it and download again")
    return batch


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _images(batch: dict, path: Path):
    import numpy as np

    data = np.asarray(batch.get("data", []))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"corrupt CIFAR file {path}: 'data' is not an N×3072 uint8 array; download it again")
    return data.reshape(-1, 3, 32, 32)


class CifarSpec(DatasetSpec):
    """A CIFAR "python version" folder `<root>/<folder>`: train files, a test file and a meta file."""

    folder: ClassVar[str] = ""
    train_files: ClassVar[tuple[str, ...]] = ()
    test_file: ClassVar[str] = ""
    meta_file: ClassVar[str] = ""
    label_key: ClassVar[str] = ""  # labels in each batch dict
    names_key: ClassVar[str] = ""  # class names in the meta dict
    torchvision_class: ClassVar[str] = ""  # torchvision.datasets class that downloads the archive
    size: ClassVar[int] = 50000  # training images
    in_channels = 3
    hflip = True
    fixed_image_size = 32
    config_keys = ("root", "download", "verify_checksums")

    @classmethod
    def path(cls, root: str | Path) -> Path:
        return Path(root) / cls.folder

    @classmethod
    def num_train(cls, ds: dict) -> int:
        return cls.size

    @classmethod
    def data_folder(cls, ds: dict) -> str:
        return str(cls.path(ds["root"]))

    @classmethod
    def check(cls, ds: dict) -> None:
        folder = cls.path(ds["root"])
        if not folder.is_dir() and not ds.get("download"):
            raise DataError(f"dataset folder {folder} not found; put the {cls.name} python version there "
                            f"or set dataset.download: true")

    @classmethod
    def download(cls, root: str | Path) -> None:
        """Fetch and unpack the standard archive into `root` (torchvision checks the archive's md5)."""
        import torchvision

        try:
            getattr(torchvision.datasets, cls.torchvision_class)(root=str(root), train=True, download=True)
        except Exception as exc:
            raise DataError(f"could not download {cls.name} into {root} ({exc}); download "
                            f"{cls.folder} by hand and set dataset.download: false") from None

    @classmethod
    def load(cls, root: str | Path = "data", download: bool = False, verify_checksums: bool = True):
        """Read `<root>/<folder>` in file order: uint8 images (N, 3, 32, 32), int64 labels, the published
        mean/std. DataError for a missing folder or file, an md5 mismatch (when `verify_checksums`), a corrupt
        file, or a pickle that asks for anything but numpy arrays."""
        import numpy as np
        import torch

        from mcmikd.data import DatasetTensors

        folder = cls.path(root)
        if not folder.is_dir():
            if download:
                cls.download(root)
            else:
                raise DataError(f"dataset folder {folder} not found; put the {cls.name} python version there "
                                f"or set dataset.download: true (dataset.root is '{root}')")
        for fname, expected in cls.checksums.items():
            path = folder / fname
            if not path.is_file():
                raise DataError(f"missing CIFAR file {path}; restore the folder or set dataset.download: true")
            if verify_checksums and md5(path) != expected:
                raise DataError(f"corrupt CIFAR file {path} (md5 mismatch); delete {folder} and download again, "
                                f"or set dataset.verify_checksums: false for a custom folder")
        train = [safe_unpickle(folder / f) for f in cls.train_files]
        test = safe_unpickle(folder / cls.test_file)
        names = list(safe_unpickle(folder / cls.meta_file).get(cls.names_key, []))
        train_x = np.concatenate([_images(b, folder / f) for b, f in zip(train, cls.train_files)])
        train_y = np.concatenate([np.asarray(b[cls.label_key]) for b in train])
        test_x, test_y = _images(test, folder / cls.test_file), np.asarray(test[cls.label_key])
        num_classes = len(cls.class_names)
        if len(names) != num_classes:
            names = list(cls.class_names)
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
                raise DataError(f"corrupt CIFAR {split} split in {folder}: labels do not match images; "
                                f"download again")
        return DatasetTensors(
            name=cls.name,
            train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
            train_labels=torch.from_numpy(train_y.astype(np.int64)),
            test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
            test_labels=torch.from_numpy(test_y.astype(np.int64)),
            mean=cls.mean, std=cls.std, class_names=names, hflip=cls.hflip,
            info={"source": str(folder), "verified_md5": verify_checksums},
        )
