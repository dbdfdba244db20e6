"""Datasets as tensors: scikit-learn's digits (bundled), CIFAR-10/100 (standard python folders), image folders.

Every loader returns a `DatasetTensors` record: uint8 images (N, C, H, W) in file order, int64 labels, the
normalisation constants and the class names. Training code keeps these on the training device and augments
whole batches there (`mcmikd.augment`).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mcmikd.errors import DataError

CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# Expected md5 of each file of the standard archives (the values published with the datasets, as torchvision
# also checks them); used to tell a corrupt download from a good one.
CIFAR_FILES = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}


@dataclass
class DatasetTensors:
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


def load_dataset(name: str, *, root: str = "data", image_size: int = 32, test_fraction: float = 0.25,
                 split_seed: int = 0, download: bool = False, verify_checksums: bool = True) -> DatasetTensors:
    """Load dataset `name` (digits | cifar10 | cifar100 | imagefolder) as uint8 tensors."""
    if name == "digits":
        return load_digits(image_size=image_size, test_fraction=test_fraction, split_seed=split_seed)
    if name in CIFAR_FOLDERS:
        return load_cifar(name, root, download=download, verify_checksums=verify_checksums)
    if name == "imagefolder":
        return load_image_folder(root, image_size=image_size)
    raise DataError(f"unknown dataset '{name}'; use digits, cifar10, cifar100 or imagefolder")


def load_digits(image_size: int = 16, test_fraction: float = 0.25, split_seed: int = 0) -> DatasetTensors:
    """scikit-learn's handwritten digits (1,797 real 8×8 images, 10 classes) with a seeded stratified split.

    Pixel values 0..16 are scaled to 0..255 and the images resized bilinearly to `image_size`.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=test_fraction, random_state=split_seed,
                                           stratify=bunch.target)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_images = images[train_idx]
    scaled = train_images.float() / 255
    mean = (float(scaled.mean()),)
    std = (float(scaled.std()),)
    return DatasetTensors(
        name="digits",
        train_images=train_images.contiguous(), train_labels=labels[train_idx],
        test_images=images[test_idx].contiguous(), test_labels=labels[test_idx],
        mean=mean, std=std, class_names=[str(c) for c in bunch.target_names], hflip=False,
        info={"source": "sklearn.datasets.load_digits", "image_size": image_size, "test_fraction": test_fraction,
              "split_seed": split_seed, "train_indices": train_idx.tolist(), "test_indices": test_idx.tolist()},
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}; put the standard python version there "
                        f"or set dataset.download: true") from None
    except Exception as exc:
        raise DataError(f"corrupt CIFAR file {path} ({type(exc).__name__}); delete it and download again "
                        f"(dataset.download: true)") from None


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data", []))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"corrupt CIFAR file {path}: 'data' is not an N×3072 uint8 array; download it again")
    return data.reshape(-1, 3, 32, 32)


def cifar_folder(name: str, root: str | Path) -> Path:
    return Path(root) / CIFAR_FOLDERS[name]


def download_cifar(name: str, root: str | Path) -> None:
    """Fetch and unpack the standard archive into `root` (torchvision checks the archive's md5)."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(root=str(root), train=True, download=True)
    except Exception as exc:
        raise DataError(f"could not download {name} into {root} ({exc}); download "
                        f"{CIFAR_FOLDERS[name]} by hand and set dataset.download: false") from None


def load_cifar(name: str, root: str | Path, download: bool = False, verify_checksums: bool = True) -> DatasetTensors:
    """Read the standard `cifar-10-batches-py` / `cifar-100-python` folder under `root` (file order kept)."""
    folder = cifar_folder(name, root)
    if not folder.is_dir():
        if download:
            download_cifar(name, root)
        else:
            raise DataError(f"dataset folder {folder} not found; put the {name} python version there "
                            f"or set dataset.download: true (dataset.root is '{root}')")
    expected = CIFAR_FILES[name]
    for fname, md5 in expected.items():
        path = folder / fname
        if not path.is_file():
            raise DataError(f"missing CIFAR file {path}; restore the folder or set dataset.download: true")
        if verify_checksums and _md5(path) != md5:
            raise DataError(f"corrupt CIFAR file {path} (md5 mismatch); delete {folder} and download again, "
                            f"or set dataset.verify_checksums: false for a custom folder")
    if name == "cifar10":
        train = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(folder / "test_batch")
        meta = _unpickle(folder / "batches.meta")
        key, names = "labels", list(meta.get("label_names", []))
        train_x = np.concatenate([_cifar_images(b, folder / f"data_batch_{i + 1}") for i, b in enumerate(train)])
        train_y = np.concatenate([np.asarray(b[key]) for b in train])
        test_x, test_y = _cifar_images(test, folder / "test_batch"), np.asarray(test[key])
    else:
        train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
        meta = _unpickle(folder / "meta")
        key, names = "fine_labels", list(meta.get("fine_label_names", []))
        train_x, train_y = _cifar_images(train, folder / "train"), np.asarray(train[key])
        test_x, test_y = _cifar_images(test, folder / "test"), np.asarray(test[key])
    num_classes = 10 if name == "cifar10" else 100
    if len(names) != num_classes:
        names = [str(i) for i in range(num_classes)]
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
            raise DataError(f"corrupt CIFAR {split} split in {folder}: labels do not match images; download again")
    mean, std = CIFAR_STATS[name]
    return DatasetTensors(
        name=name,
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(train_y.astype(np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y.astype(np.int64)),
        mean=mean, std=std, class_names=names, hflip=True,
        info={"source": str(folder), "verified_md5": verify_checksums},
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


def load_image_folder(root: str | Path, image_size: int = 32) -> DatasetTensors:
    """ImageNet-style folders `root/train/<class>/*` and `root/val/<class>/*`, resized to `image_size` (RGB)."""
    from PIL import Image

    root = Path(root)
    splits = {}
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"image folder {train_dir} not found; expected {root}/train/<class>/*.png and {root}/val/...")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {train_dir}")
    for split in ("train", "val"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            for path in sorted((root / split / cls).glob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(path) as img:
                        img = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                        images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                except Exception as exc:
                    raise DataError(f"corrupt image {path} ({type(exc).__name__}); remove or replace it") from None
                labels.append(label)
        if not images:
            raise DataError(f"no images under {root / split}; expected {root}/{split}/<class>/*.png")
        splits[split] = (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))
    scaled = splits["train"][0].float() / 255
    mean = tuple(float(v) for v in scaled.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in scaled.std(dim=(0, 2, 3)))
    return DatasetTensors(name="imagefolder", train_images=splits["train"][0], train_labels=splits["train"][1],
                          test_images=splits["val"][0], test_labels=splits["val"][1], mean=mean, std=std,
                          class_names=classes, hflip=True, info={"source": str(root), "image_size": image_size})


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
