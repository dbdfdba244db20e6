"""Checks that need torch, run once before any job starts (Snakemake `onstart`), never at parse time.

They build every teacher–student–method combination of the grid on the meta device (no memory, no
arithmetic): a method that cannot pair the two networks' feature shapes, or a config block with a key the
method does not know, stops the run with one clear line before any training. The dataset folder is checked too.
"""

from __future__ import annotations

from pathlib import Path

from mcmikd.config import NO_TEACHER, NUM_CLASSES, Grid
from mcmikd.errors import ConfigError, DataError


def dataset_shape(config: dict) -> tuple[int, int, int]:
    """(num_classes, in_channels, image_size) of the configured dataset, without loading it."""
    ds = config["dataset"]
    if ds["name"] == "digits":
        return 10, 1, ds["image_size"]
    if ds["name"] in ("cifar10", "cifar100"):
        from mcmikd.data import cifar_folder

        folder = cifar_folder(ds["name"], ds["root"])
        if not folder.is_dir() and not ds.get("download"):
            raise DataError(f"dataset folder {folder} not found; put the {ds['name']} python version there "
                            f"or set dataset.download: true")
        return NUM_CLASSES[ds["name"]], 3, 32
    train = Path(ds["root"]) / "train"
    if not train.is_dir():
        raise DataError(f"image folder {train} not found; expected {ds['root']}/train/<class>/ and {ds['root']}/val/")
    return sum(1 for p in train.iterdir() if p.is_dir()), 3, ds["image_size"]


def check_methods(grid: Grid, num_classes: int, in_channels: int, image_size: int) -> int:
    """Build every (teacher, student, method) of the grid on the meta device; returns how many were checked."""
    import torch

    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.models import create_model, feature_shapes

    combos = sorted({(r.t_arch, r.student, r.method) for r in grid.all_runs()})
    shapes: dict[str, dict] = {}

    def shape_of(arch: str) -> dict:
        if arch not in shapes:
            shapes[arch] = feature_shapes(arch, num_classes, in_channels, image_size)
        return shapes[arch]

    for t_arch, s_arch, method in combos:
        cls = get_method(method)
        hp = grid.method_hp(method)
        t_shapes = shape_of(t_arch) if cls.uses_teacher and t_arch != NO_TEACHER else {}
        s_shapes = shape_of(s_arch)
        where = f"method '{method}' for {t_arch} → {s_arch}"
        try:
            cls.check_compatible(s_shapes, t_shapes, hp)
            with torch.device("meta"):
                student = create_model(s_arch, num_classes, in_channels)
                teacher = create_model(t_arch, num_classes, in_channels) if t_shapes else None
                ctx = DistillContext(num_classes=num_classes, num_train=max(2, num_classes * 2),
                                     train_labels=torch.arange(num_classes * 2) % num_classes,
                                     in_channels=in_channels, image_size=image_size,
                                     epochs=grid.config["students"]["training"]["epochs"],
                                     student_shapes=s_shapes, teacher_shapes=t_shapes, student_arch=s_arch,
                                     teacher_arch=t_arch if t_shapes else "")
                cls(student, teacher, hp, ctx)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return len(combos)


def preflight(grid: Grid) -> str:
    num_classes, in_channels, image_size = dataset_shape(grid.config)
    n = check_methods(grid, num_classes, in_channels, image_size)
    return f"preflight: {n} teacher–student–method combinations build on {in_channels}×{image_size}² inputs"
