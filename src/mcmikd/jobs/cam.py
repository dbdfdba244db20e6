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
