"""The teacher jobs: training one teacher with its objective (`mcmikd.teachers`), and measuring its CMI."""

from __future__ import annotations

import time

import torch

from mcmikd.data import DatasetTensors
from mcmikd.distributed import multiprocess
from mcmikd.engine import Runtime, log, make_generator, predict, summarize
from mcmikd.io import provenance, read_json, write_json
from mcmikd.jobs.common import evaluator, load_model, make_stream, save_model, train, write_result
from mcmikd.models import create_model


@multiprocess
def train_teacher(data_path: str, params: dict, model_out: str, metrics_out: str, start_model: str | None = None,
                  start_metrics: str | None = None, resume_path: str | None = None,
                  threads: int | None = None, best_out: str | None = None) -> dict:
    """Train one teacher with its objective (`params['objective']`, `mcmikd.teachers`): from scratch, or
    fine-tuning the model of the objective it starts from (`start_model`, with that teacher's `start_metrics`: the
    start objective's teacher of the same seed). `params['seed']` (one of `teachers.seeds`) seeds the training.

    `model_out` holds the state `params['checkpoint']` chooses (last or best-on-test epoch); `best_out`, when
    given (fine-tuned teachers), also the best-on-test state (official few-shot run: the MCMI checkpoint with the
    best test accuracy, `experiments.<x>.teacher_checkpoint: best`), with the same sidecar sha256 record.
    An objective's planned stop (`stop_epoch()`, MLL's early-stopped teachers) ends the full recipe after that
    epoch: the model is the full run's state after it, and the teacher is not collapsed.

    A fine-tuned teacher whose chosen-epoch test accuracy falls below `collapse_ratio` × its start model's, or
    whose objective stopped it (e.g. a non-finite loss), is marked collapsed; students skip it.

    With `runtime.processes` = N > 1 the training runs as N processes (`mcmikd.distributed.multiprocess`); rank 0
    writes every file."""
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
    stream = make_stream(data, runtime, params["augment"])
    torch.manual_seed(params["seed"])
    if model is None:
        model = runtime.prepare(create_model(params["arch"], data.num_classes, data.in_channels))
    objective.bind(stream, runtime, data.num_classes)
    state = objective.prepare(model, stream, runtime, data.num_classes, params["seed"])
    module = objective.build(model, state)
    keep_best = params["checkpoint"] == "best"
    stop = objective.stop_epoch()
    planned = f"stopped after epoch {stop} (stop_epoch)" if stop else None

    def hook(record: dict) -> str | None:
        reason = objective.epoch_check(record)
        return reason if reason or not stop or record["epoch"] < stop else planned

    result = train(module, model, data, stream, params, runtime, resume_path, keep_best=keep_best or bool(best_out),
                  epoch_hook=hook if stop else objective.epoch_check)
    if keep_best:
        module.load_checkpoint_state(result.best_state)
    chosen = result.best if keep_best else result.last
    reason = result.stopped_early  # e.g. "diverged: non-finite training loss (neg_cmi = -inf) in epoch 3"
    if reason is not None and reason == planned:
        reason = None
    if reason and start_acc is not None:
        reason = f"{reason}; {cls.collapse_advice(params['hp'])}"
    if start_acc is not None and reason is None and not chosen["test_acc"] >= params["collapse_ratio"] * start_acc:
        reason = (f"test accuracy {chosen['test_acc']:.2f}% is below {params['collapse_ratio']:g} × the "
                  f"{cls.start_from} teacher's {start_acc:.2f}%; {cls.collapse_advice(params['hp'])}")
    if reason:
        log(f"WARNING: teacher {params['arch']} {params['variant']} collapsed: {reason}. "
            f"Students will not be distilled from it.")
    teacher = {"arch": params["arch"], "objective": cls.name, "variant": params["variant"], "hp": params["hp"]}
    save_model(model, model_out, num_classes=data.num_classes, in_channels=data.in_channels, **teacher,
               epoch=chosen["epoch"], test_acc=chosen["test_acc"], checkpoint=params["checkpoint"])
    metrics = {"role": "teacher", "teacher": teacher, "seed": params["seed"], "checkpoint": params["checkpoint"],
               "model_acc": chosen["test_acc"], "model_epoch": chosen["epoch"], "start_acc": start_acc,
               "collapsed": reason is not None, "collapse_reason": reason, **objective.extra_metrics(state),
               **summarize(result), **data.evaluation_record()}
    if stop:
        metrics["stop_epoch"] = stop
    if best_out:  # the best-on-test state beside the chosen one (model.pt); the same file when that is best
        if not keep_best:
            module.load_checkpoint_state(result.best_state)
        save_model(model, best_out, num_classes=data.num_classes, in_channels=data.in_channels, **teacher,
                   epoch=result.best["epoch"], test_acc=result.best["test_acc"], checkpoint="best")
        metrics["best_checkpoint"] = {"epoch": result.best["epoch"], "test_acc": result.best["test_acc"]}
    return write_result(metrics_out, metrics, params, runtime, t0, resume_path)


def load_weights(path: str, arch: str, num_classes: int, in_channels: int):
    """The model `arch` (`num_classes`, `in_channels`) with the weights of the local file `path`, read with
    `torch.load(weights_only=True)` (no code runs): a checkpoint this workflow wrote (`{'arch', 'state_dict',
    'num_classes', 'in_channels', ...}`: a teacher's `model.pt`), or a plain state dict (released weights, e.g.
    torchvision's `resnet34-b627a593.pth`, whose keys our torchvision-named models share). Returns (model, the
    checkpoint's other fields: {} for a plain state dict). Raises a one-line DataError for an unreadable file and a
    ConfigError when the file holds another architecture, class count or input channels."""
    from mcmikd.errors import ConfigError, DataError, first_line

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"weights file {path} is unreadable: {first_line(exc)}") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"weights file {path} holds a {type(ckpt).__name__}, not a state dict or a checkpoint")
    meta = {}
    if isinstance(ckpt.get("state_dict"), dict):  # a checkpoint this workflow wrote
        meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
        found = (meta.get("arch"), meta.get("num_classes"), meta.get("in_channels"))
        if found != (arch, num_classes, in_channels):
            raise ConfigError(f"weights file {path} is a {found[0]} of {found[1]} classes and {found[2]} input "
                              f"channels; teachers.weights.{arch} needs a {arch} of {num_classes} classes and "
                              f"{in_channels} channels for this dataset")
        ckpt = ckpt["state_dict"]
    model = create_model(arch, num_classes, in_channels)
    try:
        model.load_state_dict(ckpt)
    except RuntimeError as exc:
        raise ConfigError(f"weights file {path} does not fit a {arch} of {num_classes} classes and {in_channels} "
                          f"channels: {first_line(exc)}") from None
    return model, meta


def import_teacher(data_path: str, params: dict, weights_path: str, model_out: str, metrics_out: str,
                   threads: int | None = None) -> dict:
    """An MLL teacher loaded from `weights_path` (`teachers.weights`) instead of trained: the file must still have
    the sha256 the job was planned with (`params['weights']`), is loaded by `load_weights`, measured on the test
    set (accuracy %, per-class accuracy, confusion, CMI in nats) and written as a trained teacher's `model.pt` and
    `metrics.json` (one evaluation: best = last = the loaded state; no training history), with `imported`: the
    file, its sha256 and what its checkpoint says of itself (e.g. the epoch and test accuracy it was saved at).
    Raises a one-line DataError when the file changed after the run was planned."""
    from mcmikd.engine import FitResult
    from mcmikd.errors import DataError
    from mcmikd.io import sha256_file

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    expected = params["weights"]["sha256"]
    if sha256_file(weights_path) != expected:
        raise DataError(f"weights file {weights_path} changed since the run was planned (sha256 is not {expected}); "
                        f"start the run again so it plans with the file as it is now")
    data = DatasetTensors.from_file(data_path)
    model, meta = load_weights(weights_path, params["arch"], data.num_classes, data.in_channels)
    model = runtime.prepare(model).eval()
    ev = evaluator(model, data, runtime)()
    epoch = int(meta.get("epoch") or 0)
    record = {"epoch": epoch, "test_acc": ev.acc, "test_loss": ev.loss, "test_cmi": ev.cmi,
              "per_class_acc": ev.per_class_acc, "confusion": ev.confusion}
    log(f"loaded {params['arch']} from {weights_path} (sha256 {expected[:12]}…): test {ev.acc:.2f}%")
    teacher = {"arch": params["arch"], "objective": params["objective"], "variant": params["variant"],
               "hp": params["hp"]}
    save_model(model, model_out, num_classes=data.num_classes, in_channels=data.in_channels, **teacher, epoch=epoch,
               test_acc=ev.acc, checkpoint="last")
    source = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    metrics = {"role": "teacher", "teacher": teacher, "seed": params["seed"], "checkpoint": "last",
               "model_acc": ev.acc, "model_epoch": epoch, "start_acc": None, "collapsed": False,
               "collapse_reason": None, "imported": {"path": str(weights_path), "sha256": expected, "source": source},
               **summarize(FitResult(history=[], best=record, last=record, best_state=None)),
               **data.evaluation_record()}
    return write_result(metrics_out, metrics, params, runtime, t0, None)


AUGMENTED_CMI_SEED = 12345  # the fixed generator of the augmented-image CMI (its own; no training stream's)


def measure_cmi(data_path: str, model_path: str, params: dict, output: str, threads: int | None = None) -> dict:
    """A teacher's accuracy (%) and CMI (nats; `mcmikd.cmi`) at each temperature in `params['temperatures']`:

    * `train`, `test`: eval mode, clean images (our measurement);
    * `train_augmented`: eval mode on one pass over the training images augmented as in training
      (`params['augment']`, crop and flip; none when absent), drawn from a fixed generator (`AUGMENTED_CMI_SEED`)
      in batches of 500 — the official measurement (`MTCMI.py` runs the eval-mode teacher over the augmented
      training loader)."""
    from mcmikd.augment import Normalizer
    from mcmikd.cmi import conditional_mutual_information

    t0 = time.perf_counter()
    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    model, ckpt = load_model(model_path, runtime)
    normalize = Normalizer(data.mean, data.std, runtime.device)
    out = {}
    for split, images, labels in (("train", getattr(data, "train_images", None), data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        if getattr(data, "streamed", False):  # decoded in DataLoader workers, evaluation transform
            from mcmikd.streaming import predict_files

            logits = predict_files(model, data.train_files if split == "train" else data.test_files, data, runtime)
        else:
            logits = predict(model, images, normalize, runtime)
        labels = labels.to(logits.device)
        out[split] = {
            "acc": float((logits.argmax(1) == labels).double().mean() * 100),
            "cmi": {str(t): float(conditional_mutual_information(torch.softmax(logits / t, dim=1), labels,
                                                                 data.num_classes))
                    for t in params["temperatures"]},
        }
    stream = make_stream(data, runtime, params.get("augment", {}))
    generator = make_generator(AUGMENTED_CMI_SEED, runtime.device)
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for images, batch_labels, _ in stream.batches(generator, 500):
            with runtime.autocast():
                logits.append(model(images).float())
            labels.append(batch_labels)
    logits, labels = torch.cat(logits), torch.cat(labels)
    out["train_augmented"] = {
        "acc": float((logits.argmax(1) == labels).double().mean() * 100),
        "cmi": {str(t): float(conditional_mutual_information(torch.softmax(logits / t, dim=1), labels,
                                                             data.num_classes))
                for t in params["temperatures"]},
    }
    result = {"arch": ckpt["arch"], "objective": ckpt["objective"], "variant": ckpt["variant"],
              "temperatures": params["temperatures"], **out, **data.evaluation_record(),
              "provenance": provenance(params, None, str(runtime.device), time.perf_counter() - t0)}
    write_json(output, result)
    return result


