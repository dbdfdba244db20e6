"""One function per workflow step. Each takes file paths and the job's own slice of the config (`params`),
and writes its outputs atomically. The Snakemake scripts in workflow/scripts/ only call these.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mcmikd.data import DatasetTensors, fewshot_subset, load_dataset
from mcmikd.engine import (ResumeFile, Runtime, TrainStream, evaluate, fingerprint, fit, log, predict, Recipe,
                           summarize)
from mcmikd.errors import ConfigError
from mcmikd.io import provenance, read_json, torch_save, write_json
from mcmikd.models import create_model, feature_shapes


# --------------------------------------------------------------------------------------------- helpers
def save_model(model, path, **meta) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save({"arch": model.arch, "state_dict": state, **meta}, path)


def load_model(path, runtime: Runtime):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model file {path} is unreadable ({exc}); delete it and rerun its job") from None
    model = create_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"])
    model.load_state_dict(ckpt["state_dict"])
    return runtime.prepare(model).eval(), ckpt


def _augment(data: DatasetTensors, augment: dict) -> dict:
    return {"padding": int(augment.get("crop_padding", 0)), "hflip": bool(augment.get("hflip", False)) and data.hflip}


def _evaluator(model, data: DatasetTensors, stream: TrainStream, runtime: Runtime):
    test_images = data.test_images.to(runtime.device)
    return lambda: evaluate(model, test_images, data.test_labels, stream.normalize, runtime, data.num_classes)


def _resume(path, params: dict) -> ResumeFile:
    return ResumeFile(path, fingerprint(params))


# --------------------------------------------------------------------------------------------- data
def prepare_data(params: dict, output: str) -> None:
    data = load_dataset(**params)
    log(f"{data.name}: {len(data.train_labels)} train / {len(data.test_labels)} test images, "
        f"{data.num_classes} classes, {data.in_channels}×{data.image_size}×{data.image_size}")
    data.to_file(output)


# --------------------------------------------------------------------------------------------- training skeleton
def _fit(module, model, data: DatasetTensors, stream: TrainStream, params: dict, runtime: Runtime,
         resume_path: str | None, *, keep_best: bool = False, epoch_hook=None):
    """Train `module` (whose network is `model`) with the job's recipe, evaluating `model` on the test set after
    every epoch; the one loop behind teachers and students (`engine.fit`)."""
    return fit(module, stream, Recipe.from_dict(params["recipe"]), evaluator=_evaluator(model, data, stream, runtime),
               runtime=runtime, seed=params["seed"], resume=_resume(resume_path, params), keep_best_state=keep_best,
               epoch_hook=epoch_hook)


def _write_result(metrics_out: str, metrics: dict, params: dict, runtime: Runtime, t0: float,
                  resume_path: str | None) -> dict:
    """Add provenance, write the result file atomically and drop the job's resume checkpoint."""
    metrics["provenance"] = provenance(params, params["seed"], str(runtime.device), time.perf_counter() - t0)
    write_json(metrics_out, metrics)
    ResumeFile(resume_path, "").clear()
    return metrics


# --------------------------------------------------------------------------------------------- teachers
def train_teacher(data_path: str, params: dict, model_out: str, metrics_out: str, start_model: str | None = None,
                  start_metrics: str | None = None, resume_path: str | None = None,
                  threads: int | None = None) -> dict:
    """Train one teacher with its objective (`params['objective']`, `mcmikd.teachers`): from scratch, or
    fine-tuning the model of the objective it starts from (`start_model`, with that teacher's `start_metrics`).

    A fine-tuned teacher whose chosen-epoch test accuracy falls below `collapse_ratio` × its start model's, or
    whose objective stopped it (e.g. a non-finite loss), is marked collapsed; students skip it."""
    from mcmikd.teachers import get_objective

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    cls = get_objective(params["objective"])
    objective = cls(params["hp"])
    model, start_acc = None, None
    if cls.start_from is not None:
        model, _ = load_model(start_model, runtime)
        start_acc = read_json(start_metrics)["model_acc"]
    stream = TrainStream(data, runtime, **_augment(data, params["augment"]))
    torch.manual_seed(params["seed"])
    if model is None:
        model = runtime.prepare(create_model(params["arch"], data.num_classes, data.in_channels))
    state = objective.prepare(model, stream, runtime, data.num_classes, params["seed"])
    module = objective.build(model, state)
    keep_best = params["checkpoint"] == "best"
    result = _fit(module, model, data, stream, params, runtime, resume_path, keep_best=keep_best,
                  epoch_hook=objective.epoch_check)
    if keep_best:
        module.load_checkpoint_state(result.best_state)
    chosen = result.best if keep_best else result.last
    reason = result.stopped_early
    if start_acc is not None and reason is None and not chosen["test_acc"] >= params["collapse_ratio"] * start_acc:
        reason = (f"test accuracy {chosen['test_acc']:.2f}% is below {params['collapse_ratio']:g} × the "
                  f"{cls.start_from} teacher's {start_acc:.2f}%; {cls.collapse_advice(params['hp'])}")
    if reason:
        log(f"WARNING: teacher {params['arch']} {params['variant']} collapsed: {reason}. "
            f"Students will not be distilled from it.")
    teacher = {"arch": params["arch"], "objective": cls.name, "variant": params["variant"], "hp": params["hp"]}
    save_model(model, model_out, num_classes=data.num_classes, in_channels=data.in_channels, **teacher,
               epoch=chosen["epoch"], test_acc=chosen["test_acc"])
    metrics = {"role": "teacher", "teacher": teacher, "checkpoint": params["checkpoint"],
               "model_acc": chosen["test_acc"], "start_acc": start_acc, "collapsed": reason is not None,
               "collapse_reason": reason, **objective.extra_metrics(state), **summarize(result)}
    return _write_result(metrics_out, metrics, params, runtime, t0, resume_path)


def measure_cmi(data_path: str, model_path: str, params: dict, output: str, threads: int | None = None) -> dict:
    """A teacher's CMI on the training set (eval mode, no augmentation) at each temperature, and its accuracy."""
    from mcmikd.augment import Normalizer
    from mcmikd.cmi import conditional_mutual_information

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    model, ckpt = load_model(model_path, runtime)
    normalize = Normalizer(data.mean, data.std, runtime.device)
    out = {}
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        logits = predict(model, images, normalize, runtime)
        labels = labels.to(logits.device)
        out[split] = {
            "acc": float((logits.argmax(1) == labels).double().mean() * 100),
            "cmi": {str(t): float(conditional_mutual_information(torch.softmax(logits / t, dim=1), labels,
                                                                 data.num_classes))
                    for t in params["temperatures"]},
        }
    result = {"arch": ckpt["arch"], "objective": ckpt["objective"], "variant": ckpt["variant"],
              "temperatures": params["temperatures"], **out,
              "provenance": provenance(params, None, str(runtime.device), time.perf_counter() - t0)}
    write_json(output, result)
    return result


# --------------------------------------------------------------------------------------------- students
def student_pool(data: DatasetTensors, setting: dict, seed: int) -> tuple[torch.Tensor | None, int | None]:
    """Training indices a student may see and its epoch length, from the few-shot part of its setting."""
    fraction = float(setting.get("fraction", 1.0))
    if fraction >= 1.0:
        return None, None
    pool = fewshot_subset(data.train_labels, fraction, setting.get("subset", "first_n"), seed)
    length = len(data.train_labels) if setting.get("epoch_length", "full") == "full" else len(pool)
    return pool, length


def train_student(data_path: str, params: dict, metrics_out: str, teacher_model: str | None = None,
                  teacher_metrics: str | None = None, resume_path: str | None = None,
                  threads: int | None = None) -> dict:
    """Distil student `params['student']` with method `params['method']` (or train it alone for `ce`)."""
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext

    t0 = time.perf_counter()
    seed = params["seed"]
    base = {"role": "student", "teacher": params["teacher"], "student": params["student"],
            "method": params["method"], "setting": params["setting"], "seed": seed}
    if teacher_metrics and read_json(teacher_metrics).get("collapsed"):
        reason = read_json(teacher_metrics).get("collapse_reason")
        log(f"skipping: the teacher collapsed during fine-tuning ({reason})")
        metrics = {**base, "status": "skipped", "reason": f"collapsed teacher: {reason}",
                   "provenance": provenance(params, seed, "none", time.perf_counter() - t0)}
        write_json(metrics_out, metrics)
        return metrics

    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    setting = params["setting"]
    pool, epoch_length = student_pool(data, setting, seed)
    stream = TrainStream(data, runtime, pool=pool, epoch_length=epoch_length,
                         omitted=tuple(setting.get("omitted", ())), **_augment(data, params["augment"]))
    cls = get_method(params["method"])
    teacher = None
    t_shapes: dict = {}
    if cls.uses_teacher:
        teacher, _ = load_model(teacher_model, runtime)
        t_shapes = feature_shapes(teacher.arch, data.num_classes, data.in_channels, data.image_size)
    s_shapes = feature_shapes(params["student"], data.num_classes, data.in_channels, data.image_size)
    cls.check_compatible(s_shapes, t_shapes, params["hp"])
    recipe = Recipe.from_dict(params["recipe"])
    ctx = DistillContext(num_classes=data.num_classes, num_train=stream.num_visible,
                         train_labels=stream.visible_labels.to(runtime.device), in_channels=data.in_channels,
                         image_size=data.image_size, epochs=recipe.epochs, student_shapes=s_shapes,
                         teacher_shapes=t_shapes, student_arch=params["student"],
                         teacher_arch=teacher.arch if teacher is not None else "")
    torch.manual_seed(seed)
    student = create_model(params["student"], data.num_classes, data.in_channels)
    distiller = runtime.prepare(cls(student, teacher, params["hp"], ctx))
    result = _fit(distiller, student, data, stream, params, runtime, resume_path)
    diverged = (result.stopped_early or "").startswith("diverged")
    metrics = {**base, "status": "diverged" if diverged else "ok",
               "reason": result.stopped_early if diverged else None, "num_train_visible": stream.num_visible,
               "student_params": sum(p.numel() for p in student.parameters()),
               "extra_params": distiller.extra_parameter_count(), **summarize(result)}
    return _write_result(metrics_out, metrics, params, runtime, t0, resume_path)


# --------------------------------------------------------------------------------------------- Eigen-CAM
def select_cam_images(labels: torch.Tensor, indices: list[int] | None, per_class: int,
                      classes: list[int] | None) -> list[int]:
    """Fixed test images: the configured indices, else the first `per_class` test images of each class."""
    if indices:
        bad = [i for i in indices if not 0 <= i < len(labels)]
        if bad:
            raise ConfigError(f"cam.indices {bad} are outside the test set (0..{len(labels) - 1})")
        return list(indices)
    chosen = []
    for c in classes if classes is not None else sorted(set(labels.tolist())):
        members = torch.nonzero(labels == c).flatten()[:per_class]
        chosen.extend(members.tolist())
    return chosen


def run_cam(data_path: str, teacher_models: dict[str, str], params: dict, output: str,
            threads: int | None = None) -> dict:
    """Eigen-CAM maps of each teacher (objective name -> model file, in display order) on the same fixed test
    images; writes {indices, images (N, C, H, W) uint8, labels, class_names, center, teachers: {objective: {maps
    (N, H, W) in [0, 1], pred, layer, arch, objective, variant, hp}}}."""
    from mcmikd.augment import Normalizer
    from mcmikd.cam import model_eigen_cam

    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    idx = select_cam_images(data.test_labels, params.get("indices"), params["per_class"], params.get("classes"))
    images = data.test_images[idx]
    normalize = Normalizer(data.mean, data.std, runtime.device)
    result = {"indices": idx, "images": images, "labels": data.test_labels[idx], "class_names": data.class_names,
              "center": params["center"], "teachers": {}}
    for name, path in teacher_models.items():
        model, ckpt = load_model(path, runtime)
        layer = model.cam_layer if params["layer"] == "auto" else params["layer"]
        maps, logits = model_eigen_cam(model, normalize(images.to(runtime.device)), layer, center=params["center"])
        result["teachers"][name] = {"maps": maps.cpu(), "pred": logits.argmax(1).cpu(), "layer": layer,
                                    "arch": ckpt["arch"], "objective": ckpt["objective"], "variant": ckpt["variant"],
                                    "hp": ckpt["hp"]}
        log(f"{ckpt['variant']}: Eigen-CAM at {layer} for {len(idx)} images")
    torch_save(result, output)
    return result
