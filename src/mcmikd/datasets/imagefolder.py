"""ImageNet-style image folders: `<root>/train/<class>/*` and `<root>/val/<class>/*` (the val images are the
test split). Classes are the sorted names of the class folders under `train/` (hidden folders, whose name
starts with '.', are skipped); images are decoded to 8-bit RGB at their real bit depth and resized
(bilinear) to `dataset.image_size`; mean/std are computed from the training images.

Folder rules, checked before any job runs (`ImageFolder.check`) and again when loading: every class folder
of `train/` and of `val/` holds at least one image; `val/` has a folder for every class and no folder that
`train/` lacks.

Decoding (`to_rgb8`), per PIL mode:
  1, L, P, RGB, RGBX, CMYK, YCbCr, HSV   PIL's own conversion to RGB
  LA, La, PA, RGBA, RGBa, or a `transparency` entry   composited on black (RGB·α): transparent pixels,
                                          whose colour is arbitrary, become black rather than that colour
  I;16, I;16L, I;16B, I;16N               16-bit: round(value / 257), so 8-bit v saved as 16-bit v·257 reads v
  I                                       32-bit integer (or 16-bit when the file says so: PNG, PPM, a TIFF with
                                          BitsPerSample 16): round(value / 16843009), i.e. over the full
                                          unsigned 32-bit range; negative values are refused
  F                                       float: values must lie in [0, 1] (round(value · 255)); other
                                          ranges or NaN are refused, as no scale can be assumed for them
Any other mode is refused with one line naming the file and its mode.
"""

from __future__ import annotations

from pathlib import Path

from mcmikd.datasets.base import DatasetSpec
from mcmikd.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val")
DIRECT_MODES = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"}
ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
INT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the (non-hidden) class folders of one split."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(class_dir: Path) -> list[Path]:
    """The images of one class folder (by suffix, `IMAGE_SUFFIXES`), sorted by name."""
    return sorted(p for p in class_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def scan(root: str | Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Class names and, per split, the (image path, label) pairs, checking the folder rules (module docstring).
    Reads only the folder listing. Raises a one-line DataError naming the folder and the fix."""
    root = Path(root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"image folder {train_dir} not found; expected {root}/train/<class>/*.png and "
                        f"{root}/val/<class>/*.png")
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"no class folders in {train_dir}; put each class's images in {train_dir}/<class>/")
    for split_dir in (train_dir, root / "val"):
        for cls in class_folders(split_dir) if split_dir.is_dir() else []:
            try:
                cls.encode("utf-8")
            except UnicodeEncodeError:  # a name that is not UTF-8 (Python keeps its bytes as surrogates)
                shown = cls.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise DataError(f"class folder {split_dir / shown} has a name that is not UTF-8 text; tables, "
                                f"figures and the report cannot show it — rename it (e.g. with `convmv`)") from None
    val_dir = root / "val"
    if not val_dir.is_dir():
        raise DataError(f"image folder {val_dir} not found; put the test images in {val_dir}/<class>/")
    extra = sorted(set(class_folders(val_dir)) - set(classes))
    if extra:
        raise DataError(f"class folder(s) {extra} in {val_dir} have no counterpart in {train_dir}; "
                        f"rename or remove them, or add their training images")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        files[split] = []
        for label, cls in enumerate(classes):
            folder = root / split / cls
            found = image_files(folder) if folder.is_dir() else []
            if not found:
                what = "is empty" if folder.is_dir() else "is missing"
                raise DataError(f"class folder {folder} {what} (no {'/'.join(sorted(IMAGE_SUFFIXES))} images); "
                                f"add images of class '{cls}' or remove the class from every split")
            files[split] += [(path, label) for path in found]
    return classes, files


def to_rgb8(img, path: Path):
    """`img` (an open PIL image of any supported mode) as an 8-bit RGB PIL image, decoded at its real bit
    depth (module docstring). Raises a one-line DataError naming `path` and the mode when it cannot."""
    import numpy as np
    from PIL import Image

    mode = img.mode
    if mode in ALPHA_MODES or (mode in DIRECT_MODES and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if mode in DIRECT_MODES:
        return img.convert("RGB")
    if mode in INT16_MODES or mode == "I":
        values = np.asarray(img).astype(np.float64)
        if mode == "I" and values.size and values.min() < 0:
            raise DataError(f"image {path} (mode I, 32-bit signed) has negative values; save it as unsigned "
                            f"8- or 16-bit")
        bits = 16 if mode in INT16_MODES else _integer_bits(img)
        scaled = np.clip(np.rint(values * (255 / (2 ** bits - 1))), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and (np.isnan(values).any() or values.min() < 0 or values.max() > 1):
            raise DataError(f"image {path} is a float image (mode F) with values outside [0, 1] "
                            f"(min {np.nanmin(values):g}, max {np.nanmax(values):g}); save it as 8- or 16-bit, "
                            f"or scale it to [0, 1]")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L").convert("RGB")
    raise DataError(f"image {path} has PIL mode {mode}, which mcmikd cannot decode; save it as 8- or 16-bit "
                    f"grayscale or RGB (modes read: {', '.join(sorted(DIRECT_MODES | ALPHA_MODES | INT16_MODES))}, "
                    f"I, F)")


def _integer_bits(img) -> int:
    """Bit depth of a mode-I image: 16 for formats that cannot hold more (PNG, PPM/PGM) or a TIFF whose
    BitsPerSample says 16, 32 otherwise."""
    if img.format in ("PNG", "PPM"):
        return 16
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return 16 if bits == 16 else 32


def load_image(path: Path, image_size: int):
    """One image as uint8 (3, image_size, image_size). DataError for an unreadable file or mode."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = to_rgb8(img, path).resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"corrupt image {path} ({type(exc).__name__}); remove or replace it") from None


class ImageFolder(DatasetSpec):
    name = "imagefolder"
    class_names = None  # the class folder names, known only with the data
    in_channels = 3
    hflip = True
    config_keys = ("root", "image_size")  # mean/std: computed from the train split

    @classmethod
    def class_names_of(cls, ds: dict) -> list[str] | None:
        train_dir = Path(ds["root"]) / "train"
        return class_folders(train_dir) if train_dir.is_dir() else None

    @classmethod
    def num_train(cls, ds: dict) -> int | None:
        train_dir = Path(ds["root"]) / "train"
        if not train_dir.is_dir():
            return None
        return sum(len(image_files(train_dir / c)) for c in class_folders(train_dir))

    @classmethod
    def data_folder(cls, ds: dict) -> str:
        return str(ds["root"])

    @classmethod
    def check(cls, ds: dict) -> None:
        scan(ds["root"])

    @classmethod
    def load(cls, root: str | Path = "data", image_size: int = 32):
        return load_image_folder(root, image_size)


def load_image_folder(root: str | Path, image_size: int = 32):
    """`root/train/<class>/*` and `root/val/<class>/*` as a `DatasetTensors`: uint8 RGB images
    (N, 3, image_size, image_size) ordered by class then file name, int64 labels (sorted class folder index),
    mean/std of the training images. DataError when a folder rule is broken or an image cannot be decoded."""
    import numpy as np
    import torch

    from mcmikd.data import DatasetTensors

    classes, files = scan(root)
    splits = {}
    for split in SPLITS:
        images = [load_image(path, image_size) for path, _ in files[split]]
        labels = [label for _, label in files[split]]
        splits[split] = (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))
    scaled = splits["train"][0].float() / 255
    mean = tuple(float(v) for v in scaled.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in scaled.std(dim=(0, 2, 3)))
    return DatasetTensors(name="imagefolder", train_images=splits["train"][0], train_labels=splits["train"][1],
                          test_images=splits["val"][0], test_labels=splits["val"][1], mean=mean, std=std,
                          class_names=classes, hflip=True, info={"source": str(root), "image_size": image_size})
