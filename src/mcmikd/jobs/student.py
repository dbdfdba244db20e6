"""The student job: one student distilled with one method (`mcmikd.distill`) from one teacher, or trained alone."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mcmikd import distributed
from mcmikd.data import DatasetTensors, fewshot_subset
from mcmikd.engine import Recipe, Runtime, TrainStream, log, summarize
from mcmikd.io import provenance, read_json, torch_save, write_json
from mcmikd.jobs.common import load_model, make_stream, save_model, train, write_result
from mcmikd.models import create_model, feature_shapes


def student_pool(data: DatasetTensors, setting: dict, seed: int) -> tuple[torch.Tensor | None, int | None]:
    """Training indices a student may see and its epoch length, from the few-shot part of its setting."""
    fraction = float(setting.get("fraction", 1.0))
    if fraction >= 1.0:
        return None, None
    pool = fewshot_subset(data.train_labels, fraction, setting.get("subset", "first_n"), seed)
    length = len(data.train_labels) if setting.get("epoch_length", "full") == "full" else len(pool)
    return pool, length


def full_training_set(train_labels: torch.Tensor, stream: TrainStream) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (M,), slots (num_visible,)) of the whole training set the student's setting allows: every training
    image not of an omitted class (M = N without omitted classes), in training-set order, and for each visible
    position (`TrainStream` batch positions 0..num_visible-1) its index in that set — without omitted classes the
    index into the full training set, as the official few-shot code's CRD dataset gave. Omitted classes stay out:
    the student learns nothing of them, not even from negatives' labels (zero-shot; docs/paper.md, "Zero-shot")."""
    labels = train_labels.long().cpu()
    allowed = ~torch.isin(labels, torch.tensor(stream.omitted, dtype=torch.long))
    slot_of = torch.cumsum(allowed.long(), 0) - 1  # training-set index -> slot among the allowed images
    position = stream.position.cpu()
    visible = torch.empty(stream.num_visible, dtype=torch.long)
    seen = torch.nonzero(position >= 0).flatten()
    visible[position[seen]] = seen  # visible position -> training-set index
    return labels[allowed], slot_of[visible]


@distributed.multiprocess
def train_student(data_path: str, params: dict, metrics_out: str, teacher_model: str | None = None,
                  teacher_metrics: str | None = None, resume_path: str | None = None,
                  threads: int | None = None, model_out: str | None = None) -> dict:
    """Distil student `params['student']` with method `params['method']` (or train it alone for `ce`) from the
    teacher `params['teacher']` (arch, objective, variant and `seed`: the teacher seed `mcmikd.config.Grid.teacher_seed`
    maps the student seed to), recorded as `teacher_seed` in the result. With `runtime.processes` = N > 1 the
    training runs as N processes (`mcmikd.distributed.multiprocess`); rank 0 writes every file.

    `model_out` (when given) receives the student's last-epoch state, loadable by `mcmikd.jobs.common.load_model`
    (the zero-shot t-SNE job reads it, `mcmikd.jobs.tsne`); a run that trains nothing (its teacher collapsed) writes
    a file holding only its `status` and `reason`."""
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext

    t0 = time.perf_counter()
    seed = params["seed"]
    base = {"role": "student", "teacher": params["teacher"], "student": params["student"],
            "method": params["method"], "setting": params["setting"], "seed": seed,
            "teacher_seed": (params["teacher"] or {}).get("seed")}
    if teacher_metrics and read_json(teacher_metrics).get("collapsed"):
        reason = read_json(teacher_metrics).get("collapse_reason")
        log(f"skipping: the teacher collapsed during fine-tuning ({reason})")
        metrics = {**base, "status": "skipped", "reason": f"collapsed teacher: {reason}",
                   "provenance": provenance(params, seed, "none", time.perf_counter() - t0)}
        if distributed.is_writer():
            if model_out:
                torch_save({"status": "skipped", "reason": metrics["reason"]}, model_out)
            write_json(metrics_out, metrics)
        return metrics

    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    setting = params["setting"]
    pool, epoch_length = student_pool(data, setting, seed)
    stream = make_stream(data, runtime, params["augment"], pool=pool, epoch_length=epoch_length,
                         omitted=tuple(setting.get("omitted", ())))
    cls = get_method(params["method"])
    teacher = None
    t_shapes: dict = {}
    if cls.uses_teacher:
        teacher, t_ckpt = load_model(teacher_model, runtime)
        t_shapes = feature_shapes(teacher.arch, data.num_classes, data.in_channels, data.image_size)
    s_shapes = feature_shapes(params["student"], data.num_classes, data.in_channels, data.image_size)
    cls.check_compatible(s_shapes, t_shapes, params["hp"])
    recipe = Recipe.from_dict(params["recipe"])
    full_labels, full_slots = full_training_set(data.train_labels, stream)
    ctx = DistillContext(num_classes=data.num_classes, num_train=stream.num_visible,
                         train_labels=stream.visible_labels.to(runtime.device), in_channels=data.in_channels,
                         image_size=data.image_size, epochs=recipe.epochs, student_shapes=s_shapes,
                         teacher_shapes=t_shapes, student_arch=params["student"],
                         teacher_arch=teacher.arch if teacher is not None else "",
                         full_train_labels=full_labels.to(runtime.device),
                         full_train_slots=full_slots.to(runtime.device))
    torch.manual_seed(seed)
    student = create_model(params["student"], data.num_classes, data.in_channels)
    distiller = runtime.prepare(cls(student, teacher, params["hp"], ctx))
    result = train(distiller, student, data, stream, params, runtime, resume_path)
    diverged = (result.stopped_early or "").startswith("diverged")
    if teacher is not None:  # which teacher state it learned from (model.pt or best.pt) and its epoch
        base["teacher_checkpoint"] = {"file": Path(teacher_model).name, "checkpoint": t_ckpt.get("checkpoint"),
                                      "epoch": t_ckpt.get("epoch"), "test_acc": t_ckpt.get("test_acc")}
    metrics = {**base, "status": "diverged" if diverged else "ok",
               "reason": result.stopped_early if diverged else None, "num_train_visible": stream.num_visible,
               "student_params": sum(p.numel() for p in student.parameters()),
               "extra_params": distiller.extra_parameter_count(), **summarize(result), **data.evaluation_record()}
    if model_out:
        save_model(student, model_out, num_classes=data.num_classes, in_channels=data.in_channels,
                   status=metrics["status"], reason=metrics["reason"], epoch=result.last["epoch"],
                   test_acc=result.last["test_acc"], checkpoint="last")
    return write_result(metrics_out, metrics, params, runtime, t0, resume_path)


