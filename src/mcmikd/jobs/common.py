"""What every training job shares: model files, the runtime, the evaluator, and the one training skeleton
(`fit` under the job's recipe, then the result file with its provenance)."""

from __future__ import annotations

import time

import torch

from mcmikd import distributed
from mcmikd.data import DatasetTensors
from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fingerprint, fit
from mcmikd.errors import first_line
from mcmikd.io import damaged_error, provenance, torch_save, verify_file, write_json
from mcmikd.models import create_model


# --------------------------------------------------------------------------------------------- helpers
def save_model(model, path, **meta) -> None:
    """Write `model`'s weights with `meta` (rank 0 only in a multi-process job: `mcmikd.distributed`)."""
    if not distributed.is_writer():
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save({"arch": model.arch, "state_dict": state, **meta}, path)


def load_model(path, runtime: Runtime):
    verify_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise damaged_error(path, f"unreadable: {first_line(exc)}") from None
    model = create_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"])
    model.load_state_dict(ckpt["state_dict"])
    return runtime.prepare(model).eval(), ckpt


def augment_args(data: DatasetTensors, augment: dict) -> dict:
    return {"padding": int(augment.get("crop_padding", 0)), "hflip": bool(augment.get("hflip", False)) and data.hflip}


def make_stream(data, runtime: Runtime, augment: dict, *, pool=None, epoch_length=None, omitted=()):
    """The training stream of a job: `TrainStream` over an in-memory `DatasetTensors`, `mcmikd.streaming.StreamSource`
    over a `StreamedDataset` (ImageNet), which takes no few-shot pool and no omitted classes (one-line
    ConfigError)."""
    if getattr(data, "streamed", False):
        from mcmikd.errors import ConfigError
        from mcmikd.streaming import StreamSource

        if pool is not None or omitted:
            raise ConfigError(f"dataset '{data.name}' is streamed from its files, which supports no few-shot subset "
                              f"and no omitted classes; run those experiments on an in-memory dataset")
        return StreamSource(data, runtime)
    return TrainStream(data, runtime, pool=pool, epoch_length=epoch_length, omitted=tuple(omitted),
                       **augment_args(data, augment))


def evaluator(model, data: DatasetTensors, runtime: Runtime):
    """A no-argument callable measuring `model` on the test set (an `engine.Evaluation`: accuracy in %, loss, CMI in
    nats, per-class accuracy, confusion): decoded by `streaming.evaluate_stream` for a streamed dataset, otherwise
    the in-memory test tensors, moved to the device once, under the dataset's own normalisation (the training
    stream's, `engine.TrainStream.normalize`)."""
    if getattr(data, "streamed", False):
        from mcmikd.streaming import evaluate_stream

        return lambda: evaluate_stream(model, data, runtime)
    from mcmikd.augment import Normalizer

    normalize = Normalizer(data.mean, data.std, runtime.device, runtime.channels_last)
    test_images, test_labels = data.test_images.to(runtime.device), data.test_labels.to(runtime.device)
    return lambda: evaluate(model, test_images, test_labels, normalize, runtime, data.num_classes)


def resume_file(path, params: dict) -> ResumeFile:
    return ResumeFile(path, fingerprint(params))


# --------------------------------------------------------------------------------------------- training skeleton
def train(module, model, data: DatasetTensors, stream: TrainStream, params: dict, runtime: Runtime,
         resume_path: str | None, *, keep_best: bool = False, epoch_hook=None):
    """Train `module` (whose network is `model`) with the job's recipe, evaluating `model` on the test set after
    every epoch; the one loop behind teachers and students (`engine.fit`)."""
    return fit(module, stream, Recipe.from_dict(params["recipe"]), evaluator=evaluator(model, data, runtime),
               runtime=runtime, seed=params["seed"], resume=resume_file(resume_path, params), keep_best_state=keep_best,
               epoch_hook=epoch_hook)


def write_result(metrics_out: str, metrics: dict, params: dict, runtime: Runtime, t0: float,
                  resume_path: str | None) -> dict:
    """Add provenance, write the result file atomically and drop the job's resume checkpoint (the writing: rank 0
    only in a multi-process job, `mcmikd.distributed`)."""
    metrics["provenance"] = provenance(params, params["seed"], str(runtime.device), time.perf_counter() - t0)
    if not distributed.is_writer():
        return metrics
    write_json(metrics_out, metrics)
    ResumeFile(resume_path, "").clear()
    return metrics


