"""ImageNet (ILSVRC-2012, 1000 classes) read from its standard class-folder layout, `<root>/train/<wnid>/*.JPEG`
and `<root>/val/<wnid>/*.JPEG` (the validation images sorted into class folders; the val images are the test
split), by default `data/imagenet/`. Nothing is downloaded: the user puts the folders there.

Unlike the other datasets, ImageNet is never decoded into one tensor file (1.28 M training images would not fit
in memory): `index` lists the files (the folder rules of `mcmikd.datasets.imagefolder` apply, checked before any
job by `check`), and `mcmikd.streaming` decodes and augments them in DataLoader workers, with torchvision's
standard pipeline (RandomResizedCrop(224) + horizontal flip for training, Resize(256) + CenterCrop(224) for
evaluation). Classes are the sorted class-folder names (WordNet ids, so label i is torchvision's class i for
the full 1000 classes; a subset of the folders is also accepted). Mean/std are torchvision's ImageNet constants,
not computed from the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcmikd.datasets.imagefolder import ImageFolder, scan
from mcmikd.errors import DataError

# torchvision's ImageNet normalisation (torchvision.transforms docs and every torchvision classification recipe)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_SIZE = 224  # RandomResizedCrop side
EVAL_RESIZE = 256  # shorter side before the centre crop
EVAL_CROP = 224
# ILSVRC-2012 classification (Russakovsky et al., IJCV 2015, Table 1 / the challenge's development kit): 1000 classes,
# 1,281,167 training and 50,000 validation images; the sizes a cost estimate uses before the folders exist
PUBLISHED_SIZES = {"classes": 1000, "train": 1_281_167, "test": 50_000}


@dataclass
class ImageFiles:
    """A file index of an image-folder dataset: (path, label) per split in class-then-name order, class names
    in label order, normalisation constants in [0, 1] and whether flips keep the class."""

    name: str
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_labels(self) -> list[int]:
        return [label for _, label in self.train]


class ImageNet(ImageFolder):
    name = "imagenet"
    class_names = None  # the wnid folder names, known only with the data
    in_channels = 3
    hflip = True
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    config_keys = ("root",)
    fixed_image_size = TRAIN_SIZE
    streams = True  # read by mcmikd.streaming, not loaded into a DatasetTensors
    published_sizes = PUBLISHED_SIZES

    @classmethod
    def num_train(cls, ds: dict) -> int | None:
        """Training images in the folder, or ILSVRC-2012's 1,281,167 while it is not there (cost estimates)."""
        counted = super().num_train(ds)
        return PUBLISHED_SIZES["train"] if counted is None else counted

    @classmethod
    def num_test(cls, ds: dict) -> int:
        """Validation images in the folder, or ILSVRC-2012's 50,000 while it is not there (cost estimates)."""
        from mcmikd.datasets.imagefolder import class_folders, image_files

        val_dir = Path(ds["root"]) / "val"
        if not val_dir.is_dir():
            return PUBLISHED_SIZES["test"]
        return sum(len(image_files(val_dir / c)) for c in class_folders(val_dir))

    @classmethod
    def index(cls, root: str | Path = "data/imagenet") -> ImageFiles:
        """The train/val file lists (folder listing only, no image read). One-line DataError when a folder rule
        is broken (`mcmikd.datasets.imagefolder.scan`)."""
        classes, files = scan(root)
        return ImageFiles(name=cls.name, class_names=classes, mean=cls.mean, std=cls.std, hflip=cls.hflip,
                          **{split: [(str(p), label) for p, label in files[split]] for split in ("train", "val")})

    @classmethod
    def load(cls, root: str | Path = "data/imagenet"):
        raise DataError(f"dataset 'imagenet' ({root}) is streamed from its folders (mcmikd.streaming), never "
                        f"loaded into memory; use ImageNet.index")
