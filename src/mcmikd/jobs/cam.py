"""The Eigen-CAM job: maps of every compared teacher of one architecture on the same fixed test images."""

from __future__ import annotations

import torch

from mcmikd.data import DatasetTensors
from mcmikd.engine import Runtime, log
from mcmikd.errors import ConfigError
from mcmikd.io import torch_save
from mcmikd.jobs.common import load_model


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


def run_cam_measure(data_path: str, teacher_models: dict[str, str], params: dict, output: str,
                    threads: int | None = None, chunk: int = 256) -> dict:
    """The CAM localization and context measurements of one teacher seed (issue 18): for every test image with an
    object box (`info["test_boxes"]`, e.g. cluttered digits) and every compared teacher (objective -> model file),
    the maps of each method of `params["methods"]` (`mcmikd.experiments.cam.CAM_METHODS`: Eigen-CAM centred and the
    paper's uncentred
    formula, `mcmikd.cam`; Grad-CAM and Grad-CAM++ of the true class through pytorch-grad-cam) at the same layer,
    scored by `mcmikd.cam_metrics.measure` against the box. Writes JSON {arch, teacher_seed, layer, images,
    box_threshold, area_threshold, correct: {objective: [bool]}, metrics: {objective: {method: {metric: [per
    image]}}}}. Raises DataError when the dataset records no boxes."""
    from mcmikd.augment import Normalizer
    from mcmikd.cam import eigen_cam, model_activations, upsample
    from mcmikd.cam_metrics import gradcam_maps, measure
    from mcmikd.errors import DataError
    from mcmikd.io import write_json

    runtime = Runtime.from_config(params["runtime"], threads)
    data = DatasetTensors.from_file(data_path)
    boxes = data.info.get("test_boxes")
    if boxes is None:
        raise DataError(f"dataset '{data.name}' records no object boxes; measure CAMs on a dataset that does "
                        f"(e.g. cluttered_digits) or set experiments.cam.measure: false")
    normalize = Normalizer(data.mean, data.std, runtime.device)
    result = {"arch": params["arch"], "teacher_seed": params["teacher_seed"], "images": len(boxes),
              "box_threshold": params["box_threshold"], "area_threshold": params["area_threshold"],
              "evaluated_on": data.evaluated_on, "correct": {}, "metrics": {}}
    for name, path in teacher_models.items():
        model, ckpt = load_model(path, runtime)
        layer = model.cam_layer if params["layer"] == "auto" else params["layer"]
        result["layer"] = layer
        per_method = {m: None for m in params["methods"]}
        correct = []
        for start in range(0, len(boxes), chunk):
            images = normalize(data.test_images[start:start + chunk].to(runtime.device))
            labels = data.test_labels[start:start + chunk].to(runtime.device)
            box = boxes[start:start + chunk]
            activations, logits = model_activations(model, images, layer)  # one forward: both Eigen-CAMs, correct
            correct += (logits.argmax(1) == labels).cpu().tolist()
            maps = {}
            for method in params["methods"]:
                if method in ("eigencam", "eigencam_uncentered"):
                    maps[method] = upsample(eigen_cam(activations, center=method == "eigencam"),
                                            tuple(images.shape[-2:]))
                else:
                    maps[method] = gradcam_maps(model, images, layer, labels, method)
            for method, m in maps.items():
                scores = measure(m.cpu(), box, params["box_threshold"], params["area_threshold"],
                                 tuple(params.get("box_thresholds", ())))
                scores.pop("box")
                if per_method[method] is None:
                    per_method[method] = scores
                else:
                    for key, values in scores.items():
                        per_method[method][key] += values
        result["metrics"][name] = per_method
        result["correct"][name] = correct
        loc = {m: sum(v["localized"]) / len(boxes) for m, v in per_method.items()}
        log(f"{ckpt['variant']} seed {params['teacher_seed']}: {len(boxes)} images, localization accuracy "
            + ", ".join(f"{m} {100 * a:.1f}%" for m, a in loc.items()))
    write_json(output, result)
    return result
