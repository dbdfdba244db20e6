"""Checks that need torch, run once before any job starts, never at parse time: by Snakemake's `onstart` on a
real run, and on a dry run (`snakemake -n`) by rules/checks.smk, so a dry run refuses what the run would refuse.

They build every teacher–student–method combination of the grid on the meta device (no memory, no
arithmetic): a method that cannot pair the two networks' feature shapes, or a config block with a key the
method does not know, stops the run with one clear line before any training. The Eigen-CAM layer of every CAM
teacher is looked up (and run) on the meta device too, and the dataset folder and class ids are checked. A dry
run skips, and says so in one line, what needs a data folder that is not there yet.
"""

from __future__ import annotations

from pathlib import Path

from mcmikd.config import NO_TEACHER, Grid
from mcmikd.datasets import get_dataset
from mcmikd.errors import ConfigError, DataError

STAND_IN_CLASSES = 10  # class count the meta-device builds assume in a dry run whose image folder is not there


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
    try:
        num_train = spec.num_train(ds)
    except (KeyError, TypeError, ValueError):  # a partial dataset block (its defaults not filled): unknown
        num_train = None
    check_fewshot_sizes(grid, num_train, shape[0])
    return shape


def check_fewshot_sizes(grid: Grid, num_train: int | None, num_classes: int) -> None:
    """Refuse a `first_n` few-shot fraction whose subset, ⌊f·N⌋ of the N training images, is smaller than the
    class count (it could not hold one image per class), before any job; unknown N: checked by the job."""
    from mcmikd.canonical import fraction_of

    if not num_train:
        return
    for name, exp in grid.experiments.items():
        if exp.body.get("subset", "first_n") != "first_n":
            continue
        for i, fraction in enumerate(exp.body.get("fractions") or []):
            kept = fraction_of(num_train, fraction)
            if kept < num_classes:
                raise ConfigError(f"config key 'experiments.{name}.fractions[{i}]': {fraction:g} keeps {kept} of "
                                  f"{num_train} training images, fewer than the {num_classes} classes; use at least "
                                  f"{num_classes / num_train:.3g}")


def _pair_key(exp, where: str, t_arch: str, s_arch: str) -> str:
    pairs = exp.pairs()
    for i, pair in enumerate(pairs):
        if (pair["teacher"], pair["student"]) == (t_arch, s_arch) or (t_arch == NO_TEACHER
                                                                        and pair["student"] == s_arch):
            return f"{where}.{exp.pair_key()}[{i}]" if exp.pair_key() == "pairs" else f"{where}.pair"
    return f"{where}.methods"  # pragma: no cover - every run comes from a pair


def check_methods(grid: Grid, num_classes: int, in_channels: int, image_size: int) -> int:
    """Build every (teacher, student, method) of the grid on the meta device; returns how many were checked.

    Each architecture is built once per role (teacher, student) and shared by the combinations that use it."""
    import torch

    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.models import create_model, feature_shapes

    # (teacher, student, method, an experiment's hp overrides) -> (the first config key asking for it, the key that
    # holds the hyper-parameters: methods.<m>, or experiments.<e>.method_hp.<m> where the experiment overrides them)
    combos: dict[tuple[str, str, str, str], tuple[str, str, dict]] = {}
    for name, runs in grid.runs.items():
        exp = grid.experiments[name]
        for r in runs:
            overrides = exp.method_overrides(r.method)
            source = f"experiments.{name}.method_hp.{r.method}" if overrides else f"methods.{r.method}"
            combos.setdefault((r.t_arch, r.student, r.method, repr(sorted(overrides.items()))),
                              (_pair_key(exp, f"experiments.{name}", r.t_arch, r.student), source, overrides))
    shapes: dict[str, dict] = {}
    models: dict[tuple[str, str], torch.nn.Module] = {}

    def shape_of(arch: str) -> dict:
        if arch not in shapes:
            shapes[arch] = feature_shapes(arch, num_classes, in_channels, image_size)
        return shapes[arch]

    def model(arch: str, role: str):
        if (arch, role) not in models:
            with torch.device("meta"):
                models[(arch, role)] = create_model(arch, num_classes, in_channels)
        return models[(arch, role)]

    for (t_arch, s_arch, method, _), (key, source, overrides) in sorted(combos.items()):
        cls = get_method(method)
        configured = grid.method_hp(method)
        hp = {**configured, **overrides}
        for where, keys in ((f"methods.{method}", configured), (source, overrides)):
            cls.check_hp(keys, where)  # known keys, their types and ranges
        t_shapes = shape_of(t_arch) if cls.uses_teacher and t_arch != NO_TEACHER else {}
        s_shapes = shape_of(s_arch)
        try:
            cls.check_compatible(s_shapes, t_shapes, hp)
            with torch.device("meta"):
                ctx = DistillContext(num_classes=num_classes, num_train=max(2, num_classes * 2),
                                     train_labels=torch.arange(num_classes * 2) % num_classes,
                                     full_train_labels=torch.arange(num_classes * 2) % num_classes,
                                     full_train_slots=torch.arange(num_classes * 2),
                                     in_channels=in_channels, image_size=image_size,
                                     epochs=grid.config["students"]["training"]["epochs"],
                                     student_shapes=s_shapes, teacher_shapes=t_shapes, student_arch=s_arch,
                                     teacher_arch=t_arch if t_shapes else "")
                cls(model(s_arch, "student"), model(t_arch, "teacher") if t_shapes else None, hp, ctx)
        except ConfigError as err:
            exclude = key.rsplit(".", 1)[0] + ".exclude"
            err = f"{err} (with the overrides of '{source}')" if overrides else err
            raise ConfigError(f"config key '{key}': method '{method}' cannot distil {t_arch} → {s_arch}: {err}; "
                              f"or add {{method: {method}, teacher: {t_arch}, student: {s_arch}}} "
                              f"to {exclude}") from None
    return len(combos)


def map_layers(model, in_channels: int, image_size: int) -> list[str]:
    """Dotted names of the modules of `model` (on the meta device) whose output is a map (N, C, H, W) with more
    than one position: the layers Eigen-CAM can read, found by one forward pass with a hook on every module."""
    import torch

    maps: dict[str, bool] = {}

    def recorder(name):
        def hook(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            maps[name] = isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2:].numel() > 1
        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    try:
        with torch.device("meta"), torch.no_grad():
            model.eval()(torch.empty(2, in_channels, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return [n for n, is_map in maps.items() if is_map]


def check_cam_layers(grid: Grid, num_classes: int, in_channels: int, image_size: int) -> int:
    """Every CAM teacher's `layer` (`auto`: the model's `cam_layer`) is one of its modules and gives a 4-D map,
    checked on the meta device; returns how many teachers were checked. One-line ConfigError naming the layer,
    the model and a few valid names."""
    import torch

    from mcmikd.models import create_model

    n = 0
    for name, exp in grid.experiments.items():
        if not hasattr(exp, "job_params"):
            continue
        layer = exp.body.get("layer", "auto")
        for arch in exp.teacher_archs():
            with torch.device("meta"):
                model = create_model(arch, num_classes, in_channels)
            target = model.cam_layer if layer == "auto" else layer
            valid = map_layers(model, in_channels, image_size)
            if target not in valid:
                top = [v for v in valid if "." not in v]
                few = list(dict.fromkeys([model.cam_layer, *reversed(top)]))[:5]
                what = (f"layer '{target}' of {arch} gives no (N, C, H, W) map larger than 1×1"
                        if target in dict(model.named_modules()) else f"{arch} has no layer '{target}'")
                raise ConfigError(f"config key 'experiments.{name}.layer': {what}; use 'auto' (= {model.cam_layer}) "
                                  f"or another layer of {arch}, e.g. {', '.join(few)}")
            n += 1
    return n


def check_streamed_dataset(grid: Grid) -> None:
    """A dataset read from its files (`DatasetSpec.streams`: ImageNet; `mcmikd.streaming`) has no held-out
    validation split, few-shot subsets or omitted classes: a config asking for them stops here with one line."""
    ds = grid.config["dataset"]
    if not get_dataset(ds["name"]).streams:
        return
    if ds.get("validation"):
        raise ConfigError(f"config key 'dataset.validation': dataset '{ds['name']}' is streamed from its files and "
                          f"has no held-out validation split; remove the key")
    for name, runs in grid.runs.items():
        for run in runs:
            setting = grid.student_params(run)["setting"]
            if setting.get("fraction", 1.0) < 1.0 or setting.get("omitted"):
                raise ConfigError(f"config key 'experiments.{name}': dataset '{ds['name']}' is streamed from its "
                                  f"files, which supports no few-shot subset and no omitted classes; disable the "
                                  f"experiment or use an in-memory dataset")


def _data_folder_missing(grid: Grid) -> Path | None:
    """The configured data folder when it is not there (None when it is, or the data are bundled)."""
    ds = grid.config["dataset"]
    folder = get_dataset(ds["name"]).data_folder(ds)
    return None if folder is None or Path(folder).exists() else Path(folder)


def preflight(grid: Grid, dry_run: bool = False) -> str:
    """Every torch-needing check before any job; returns what was checked (one line, and, on a dry run without
    the data folder, a first line saying which checks were skipped). Raises a one-line McmiError.

    A dry run whose data folder is not there yet skips the folder check and, when the class count needs the data
    (an image folder), the class-id checks, building the networks for `STAND_IN_CLASSES` classes instead."""
    lines = []
    check_streamed_dataset(grid)
    try:
        shape = dataset_shape(grid)
    except DataError:
        folder = _data_folder_missing(grid)
        if not dry_run or folder is None:
            raise
        ds = grid.config["dataset"]
        spec = get_dataset(ds["name"])
        skipped = "its contents"
        try:
            shape = spec.shape(ds)
            grid.check_class_ids(shape[0])
        except DataError:
            shape = (STAND_IN_CLASSES, spec.in_channels, spec.image_size_of(ds))
            skipped = f"its contents and the class ids; networks built for {STAND_IN_CLASSES} classes"
        lines.append(f"Note: dry run: data folder {folder} not found, so the checks that need it were skipped "
                     f"({skipped}); a real run makes them before any job")
    n = check_methods(grid, *shape)
    k = check_cam_layers(grid, *shape)
    num_classes, in_channels, image_size = shape
    lines.append(f"preflight: {n} teacher–student–method combinations and {k} CAM layers build on "
                 f"{in_channels}×{image_size}² inputs")
    return "\n".join(lines)
