"""Checks that need torch, run once before any job starts (Snakemake `onstart`), never at parse time.

They build every teacher–student–method combination of the grid on the meta device (no memory, no
arithmetic): a method that cannot pair the two networks' feature shapes, or a config block with a key the
method does not know, stops the run with one clear line before any training. The dataset folder is checked too.
"""

from __future__ import annotations

from mcmikd.config import NO_TEACHER, Grid
from mcmikd.datasets import get_dataset
from mcmikd.errors import ConfigError


def dataset_shape(grid: Grid | dict) -> tuple[int, int, int]:
    """(num_classes, in_channels, image_size) of the configured dataset, without loading it.

    Checks the data are where the config says (the dataset spec's `check`: a CIFAR folder, or an image folder's
    class folders) and the config's class ids against the dataset's classes, which for an image folder are
    known only now. Raises a one-line DataError or ConfigError.
    """
    if isinstance(grid, dict):  # a validated config
        grid = Grid.from_config(grid)
    ds = grid.config["dataset"]
    spec = get_dataset(ds["name"])
    spec.check(ds)
    shape = spec.shape(ds)
    grid.check_class_ids(shape[0])
    return shape


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
    num_classes, in_channels, image_size = dataset_shape(grid)
    n = check_methods(grid, num_classes, in_channels, image_size)
    return f"preflight: {n} teacher–student–method combinations build on {in_channels}×{image_size}² inputs"
