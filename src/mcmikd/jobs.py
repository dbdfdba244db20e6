"""One function per workflow step. Each takes file paths and the job's own slice of the config (`params`),
and writes its outputs atomically. The Snakemake scripts in workflow/scripts/ only call these.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from mcmikd.data import DatasetTensors, fewshot_subset, load_dataset
from mcmikd.engine import (ResumeFile, Runtime, TrainStream, evaluate, fingerprint, fit, log, make_generator,
                           predict, Recipe, summarize)
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


# --------------------------------------------------------------------------------------------- teachers
def train_teacher(data_path: str, params: dict, model_out: str, metrics_out: str, resume_path: str | None = None,
                  threads: int | None = None) -> dict:
    """MLL teacher: cross-entropy training with the configured recipe."""
    from mcmikd.distill.methods.ce import CE

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    torch.manual_seed(params["seed"])
    model = runtime.prepare(create_model(params["arch"], data.num_classes, data.in_channels))
    objective = CE(model, None, {}, ctx=None)
    stream = TrainStream(data, runtime, **_augment(data, params["augment"]))
    recipe = Recipe.from_dict(params["recipe"])
    keep_best = params.get("checkpoint", "last") == "best"
    result = fit(objective, stream, recipe, evaluator=_evaluator(model, data, stream, runtime), runtime=runtime,
                 seed=params["seed"], resume=_resume(resume_path, params), keep_best_state=keep_best)
    if keep_best:
        objective.load_checkpoint_state(result.best_state)
    chosen = result.best if keep_best else result.last
    save_model(model, model_out, num_classes=data.num_classes, in_channels=data.in_channels, kind="mll",
               epoch=chosen["epoch"], test_acc=chosen["test_acc"])
    metrics = {"kind": "teacher", "teacher": {"arch": params["arch"], "kind": "mll", "lambda": None},
               "checkpoint": params.get("checkpoint", "last"), "model_acc": chosen["test_acc"],
               "collapsed": False, **summarize(result),
               "provenance": provenance(params, params["seed"], str(runtime.device), time.perf_counter() - t0)}
    write_json(metrics_out, metrics)
    ResumeFile(resume_path, "").clear()
    return metrics


def finetune_mcmi(data_path: str, mll_model: str, mll_metrics: str, params: dict, model_out: str,
                  metrics_out: str, resume_path: str | None = None, threads: int | None = None) -> dict:
    """MCMI teacher: fine-tune a copy of the MLL teacher with CE − λ·KL(P_x ‖ Q_y), centroids frozen."""
    from mcmikd.teacher import McmiObjective, initial_centroids

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    model, _ = load_model(mll_model, runtime)
    mll_acc = read_json(mll_metrics)["model_acc"]
    stream = TrainStream(data, runtime, **_augment(data, params["augment"]))
    torch.manual_seed(params["seed"])
    generator = make_generator(params["seed"] + 7919, runtime.device)  # separate from the training stream
    centroids = initial_centroids(model, stream, runtime, data.num_classes, params["centroids"], generator)
    ema = params.get("ema_decay") if params["centroids"] == "ema" else None
    objective = McmiObjective(model, centroids, params["lambda"], ema_decay=ema)
    recipe = Recipe.from_dict(params["recipe"])
    keep_best = params.get("checkpoint", "last") == "best"

    def stop_if_diverged(record: dict) -> str | None:
        if not math.isfinite(record["train"]["total"]):
            return "the training loss is not finite (the −λ·KL term is unbounded; lower λ)"
        return None

    result = fit(objective, stream, recipe, evaluator=_evaluator(model, data, stream, runtime), runtime=runtime,
                 seed=params["seed"], resume=_resume(resume_path, params), keep_best_state=keep_best,
                 epoch_hook=stop_if_diverged)
    if keep_best:
        objective.load_checkpoint_state(result.best_state)
    chosen = result.best if keep_best else result.last
    ratio = params["collapse_ratio"]
    reason = result.stopped_early
    if reason is None and not chosen["test_acc"] >= ratio * mll_acc:
        reason = (f"test accuracy {chosen['test_acc']:.2f}% is below {ratio:g} × the MLL teacher's "
                  f"{mll_acc:.2f}%; lower λ ({params['lambda']:g})")
    if reason:
        log(f"WARNING: MCMI teacher {params['arch']} λ={params['lambda']:g} collapsed: {reason}. "
            f"Students will not be distilled from it.")
    save_model(model, model_out, num_classes=data.num_classes, in_channels=data.in_channels, kind="mcmi",
               lam=params["lambda"], epoch=chosen["epoch"], test_acc=chosen["test_acc"])
    metrics = {"kind": "teacher", "teacher": {"arch": params["arch"], "kind": "mcmi", "lambda": params["lambda"]},
               "checkpoint": params.get("checkpoint", "last"), "model_acc": chosen["test_acc"],
               "mll_acc": mll_acc, "collapsed": reason is not None, "collapse_reason": reason,
               "initial_centroids": centroids.cpu().tolist(), **summarize(result),
               "provenance": provenance(params, params["seed"], str(runtime.device), time.perf_counter() - t0)}
    write_json(metrics_out, metrics)
    ResumeFile(resume_path, "").clear()
    return metrics


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
    result = {"arch": ckpt["arch"], "kind": ckpt["kind"], "lambda": ckpt.get("lam"),
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
    base = {"kind": "student", "teacher": params["teacher"], "student": params["student"],
            "method": params["method"], "setting": params["setting"], "seed": seed}
    if teacher_metrics and read_json(teacher_metrics).get("collapsed"):
        reason = read_json(teacher_metrics).get("collapse_reason")
        log(f"skipping: the teacher collapsed during MCMI fine-tuning ({reason})")
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
    result = fit(distiller, stream, recipe, evaluator=_evaluator(student, data, stream, runtime), runtime=runtime,
                 seed=seed, resume=_resume(resume_path, params))
    metrics = {**base, "status": "ok", "num_train_visible": stream.num_visible,
               "student_params": sum(p.numel() for p in student.parameters()),
               "extra_params": distiller.extra_parameter_count(), **summarize(result),
               "provenance": provenance(params, seed, str(runtime.device), time.perf_counter() - t0)}
    write_json(metrics_out, metrics)
    ResumeFile(resume_path, "").clear()
    return metrics


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
    """Eigen-CAM maps of each teacher (label -> model file) on the same fixed test images."""
    from mcmikd.augment import Normalizer
    from mcmikd.cam import model_eigen_cam

    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    idx = select_cam_images(data.test_labels, params.get("indices"), params["per_class"], params.get("classes"))
    images = data.test_images[idx]
    normalize = Normalizer(data.mean, data.std, runtime.device)
    result = {"indices": idx, "images": images, "labels": data.test_labels[idx], "class_names": data.class_names,
              "center": params["center"], "teachers": {}}
    for label, path in teacher_models.items():
        model, ckpt = load_model(path, runtime)
        layer = model.cam_layer if params["layer"] == "auto" else params["layer"]
        maps, logits = model_eigen_cam(model, normalize(images.to(runtime.device)), layer, center=params["center"])
        result["teachers"][label] = {"maps": maps.cpu(), "pred": logits.argmax(1).cpu(), "layer": layer,
                                     "arch": ckpt["arch"], "kind": ckpt["kind"], "lambda": ckpt.get("lam")}
        log(f"{label}: Eigen-CAM at {layer} for {len(idx)} images")
    torch_save(result, output)
    return result
