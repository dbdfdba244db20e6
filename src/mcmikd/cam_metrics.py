"""Weakly-supervised localization and "context" metrics for class-activation maps, and Grad-CAM baselines.

Sources of the protocols:

* Box protocol of CAM (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016):
  keep the pixels whose value is at least a fraction (20 % in the paper) of the map's maximum, take the largest
  connected component and its bounding box. A box is a correct localization when its IoU with the ground-truth
  box is at least 0.5. We score the box of the map for the *true* class, whatever the network predicts
  ("GT-known" localization), so the metric measures the map, not the classifier.
* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): a hit when the
  map's maximum lies inside the object box. The original allows a 15-pixel tolerance margin around the box;
  we use no margin, because our images are 32 px wide and such a margin would cover most of the image.
* Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) compares itself with Grad-CAM and Grad-CAM++ on this localization
  protocol; `gradcam_maps` provides those two baselines through the `pytorch-grad-cam` package.

Beyond localization, three "context" numbers describe how spread out a map is: the share of its mass outside
the object box (`context_mass`), the share of the image above half the maximum (`area_above`) and its
normalised spatial entropy (`spatial_entropy`).

Conventions: boxes are (x0, y0, x1, y1) integer pixel coordinates with exclusive ends, so a box covers rows
y0..y1-1 and columns x0..x1-1, and its area is (x1 - x0)·(y1 - y0). Maps are float tensors (or arrays) of
shape (H, W), or batches (N, H, W), with values ≥ 0 that need not be scaled to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

Box = tuple[int, int, int, int]

_METHODS = ("gradcam", "gradcampp")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- validation helpers


def _float64(values) -> np.ndarray:
    """A tensor (any device) or array-like as a float64 numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _as_map(cam) -> np.ndarray:
    """A (H, W) map as a float64 array; ValueError if it is not 2-D, empty, non-finite or negative."""
    arr = _float64(cam)
    if arr.ndim != 2:
        raise ValueError(f"a map must be 2-D (H, W), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"a map must not be empty, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError("a map must have finite values (found NaN or inf)")
    if (arr < 0).any():
        raise ValueError(f"a map must be non-negative (min {arr.min():g}); apply a ReLU first")
    return arr


def _as_batch(maps) -> np.ndarray:
    """A (N, H, W) batch of maps as a float64 array; ValueError if it is not 3-D."""
    arr = _float64(maps)
    if arr.ndim != 3:
        raise ValueError(f"maps must be a batch of shape (N, H, W), got shape {tuple(arr.shape)}")
    return arr


def _as_box(box) -> Box:
    """(x0, y0, x1, y1) as Python ints; ValueError unless 4 integer values with x0 ≤ x1 and y0 ≤ y1."""
    if isinstance(box, torch.Tensor):
        values = box.detach().cpu().reshape(-1).tolist()
    else:
        values = np.asarray(box).reshape(-1).tolist()
    if len(values) != 4:
        raise ValueError(f"a box must have 4 values (x0, y0, x1, y1), got {box!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) for v in values):
        raise ValueError(f"box coordinates must be integer pixels, got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"a box must have x0 <= x1 and y0 <= y1 (exclusive ends), got {(x0, y0, x1, y1)}")
    return x0, y0, x1, y1


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1] (a fraction of the map's maximum), got {threshold}")
    return threshold


def _clip(box: Box, height: int, width: int) -> Box:
    """The part of `box` inside an image of `height` × `width` (possibly empty)."""
    x0, y0, x1, y1 = box
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    return x0, y0, max(x0, x1), max(y0, y1)


# --------------------------------------------------------------------------- per-map metrics


def box_from_map(cam, threshold: float = 0.2) -> Box:
    """Bounding box of the largest connected region of a map above `threshold` × its maximum (CAM protocol).

    Args:
        cam: map of shape (H, W), values ≥ 0 in any unit (torch tensor or array-like).
        threshold: fraction of the map's maximum, in (0, 1]; pixels with value ≥ threshold·max are kept.

    Returns:
        (x0, y0, x1, y1) in pixels, exclusive ends. Regions are 8-connected (`scipy.ndimage.label`); among
        regions of equal largest size the one containing the map's argmax (first in row-major order) wins,
        else the one with the lowest label (first met in row-major order). A map with maximum 0 carries no
        location: its box is the whole image (0, 0, W, H).

    Raises:
        ValueError: threshold outside (0, 1]; map not 2-D, empty, non-finite or negative.
    """
    threshold = _check_threshold(threshold)
    arr = _as_map(cam)
    height, width = arr.shape
    peak = arr.max()
    if peak <= 0:
        return 0, 0, width, height
    labels, count = ndimage.label(arr >= threshold * peak, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1  # labels of the largest regions, ascending
    peak_label = labels.ravel()[int(np.argmax(arr))]  # the argmax pixel is always in the mask
    chosen = peak_label if peak_label in largest else largest[0]
    rows, cols = np.nonzero(labels == chosen)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def box_iou(a, b) -> float:
    """Intersection over union of two boxes, on pixel areas.

    Args:
        a, b: boxes (x0, y0, x1, y1), integer pixels with exclusive ends (tuple, list or tensor of 4 values).

    Returns:
        |a ∩ b| / |a ∪ b| in [0, 1]; 0.0 when the boxes are disjoint (or both empty).

    Raises:
        ValueError: a box without 4 integer values, or with x1 < x0 or y1 < y0.
    """
    ax0, ay0, ax1, ay1 = _as_box(a)
    bx0, by0, bx1, by1 = _as_box(b)
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def pointing_hit(cam, box) -> bool:
    """Pointing game: is the map's maximum inside the box? (no tolerance margin)

    Args:
        cam: map of shape (H, W), values ≥ 0.
        box: ground-truth box (x0, y0, x1, y1), integer pixels with exclusive ends.

    Returns:
        True when the argmax pixel (row y, column x) has x0 ≤ x < x1 and y0 ≤ y < y1. Ties go to the first
        maximum in row-major order, so a constant (e.g. all-zero) map points at pixel (0, 0).

    Raises:
        ValueError: bad map (see `box_from_map`) or bad box (see `box_iou`).
    """
    arr = _as_map(cam)
    x0, y0, x1, y1 = _as_box(box)
    y, x = np.unravel_index(int(np.argmax(arr)), arr.shape)
    return bool(x0 <= x < x1 and y0 <= y < y1)


def context_mass(cam, box) -> float:
    """Fraction of the map's total mass that lies outside the box.

    Args:
        cam: map of shape (H, W), values ≥ 0.
        box: ground-truth box (x0, y0, x1, y1), integer pixels with exclusive ends; parts outside the image
            are ignored.

    Returns:
        A fraction in [0, 1] (0: all mass on the object, 1: none); NaN for a map whose mass is 0.

    Raises:
        ValueError: bad map or bad box.
    """
    arr = _as_map(cam)
    x0, y0, x1, y1 = _clip(_as_box(box), *arr.shape)
    total = arr.sum()
    if total <= 0:
        return math.nan
    inside = arr[y0:y1, x0:x1].sum()
    return float(min(max((total - inside) / total, 0.0), 1.0))


def area_above(cam, threshold: float = 0.5) -> float:
    """Fraction of the image's pixels whose value is at least `threshold` × the map's maximum.

    Args:
        cam: map of shape (H, W), values ≥ 0.
        threshold: fraction of the maximum, in (0, 1].

    Returns:
        A fraction in (0, 1] (at least the argmax pixel counts); 0.0 for a map whose maximum is 0.

    Raises:
        ValueError: threshold outside (0, 1] or bad map.
    """
    threshold = _check_threshold(threshold)
    arr = _as_map(cam)
    peak = arr.max()
    if peak <= 0:
        return 0.0
    return float((arr >= threshold * peak).mean())


def spatial_entropy(cam) -> float:
    """Normalised Shannon entropy of the map seen as a distribution over pixels.

    The map is divided by its sum, its entropy -Σ p log p is taken in nats and divided by log(H·W), the
    entropy of the uniform distribution, so the result is unit-free in [0, 1]: 1 for a uniform map, 0 when
    all the mass sits on one pixel (also the value for a 1 × 1 map).

    Args:
        cam: map of shape (H, W), values ≥ 0.

    Returns:
        Entropy in [0, 1]; NaN for a map whose mass is 0.

    Raises:
        ValueError: bad map.
    """
    arr = _as_map(cam)
    total = arr.sum()
    if total <= 0:
        return math.nan
    if arr.size == 1:
        return 0.0
    p = arr.ravel() / total
    p = p[p > 0]
    entropy = float(-(p * np.log(p)).sum())
    return min(max(entropy / math.log(arr.size), 0.0), 1.0)


def measure(maps, boxes, box_threshold: float = 0.2, area_threshold: float = 0.5,
            sweep: tuple[float, ...] = ()) -> dict[str, list]:
    """All per-image metrics of a batch of maps against ground-truth boxes.

    Args:
        maps: (N, H, W) maps, values ≥ 0 (tensor or array-like).
        boxes: (N, 4) ground-truth boxes (x0, y0, x1, y1), integer pixels with exclusive ends (int tensor,
            array or list of 4-sequences).
        box_threshold: fraction of the maximum for `box_from_map` (CAM: 0.2).
        area_threshold: fraction of the maximum for `area_above`.
        sweep: further box thresholds; for each t, ``localized@t`` (IoU ≥ 0.5 with the box drawn at t), from which
            MaxBoxAcc (Choe et al., CVPR 2020: the best localization accuracy over thresholds) is taken.

    Returns:
        Plain Python lists of length N (JSON-ready; `context` and `entropy` may hold NaN for all-zero maps):
        ``iou`` (float, predicted vs ground-truth box), ``localized`` (bool, iou ≥ 0.5),
        ``pointing`` (bool; an all-zero map is a miss),
        ``context`` (float, mass outside the box), ``area`` (float), ``entropy`` (float) and ``box`` (the
        predicted box as a list of 4 ints).

    Raises:
        ValueError: maps not (N, H, W), a number of boxes different from N, a bad box, bad map or threshold.
    """
    arr = _as_batch(maps)
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().tolist()
    boxes = list(boxes)
    if len(boxes) != arr.shape[0]:
        raise ValueError(f"got {arr.shape[0]} maps but {len(boxes)} boxes")
    out: dict[str, list] = {k: [] for k in ("iou", "localized", "pointing", "context", "area", "entropy", "box")}
    out.update({f"localized@{t:g}": [] for t in sweep})
    for cam, gt in zip(arr, boxes):
        gt = _as_box(gt)
        pred = box_from_map(cam, box_threshold)
        iou = box_iou(pred, gt)
        out["iou"].append(iou)
        out["localized"].append(iou >= 0.5)
        out["pointing"].append(bool(cam.max() > 0) and pointing_hit(cam, gt))  # an all-zero map points nowhere
        out["context"].append(context_mass(cam, gt))
        out["area"].append(area_above(cam, area_threshold))
        out["entropy"].append(spatial_entropy(cam))
        out["box"].append(list(pred))
        for t in sweep:
            out[f"localized@{t:g}"].append(box_iou(box_from_map(cam, t), gt) >= 0.5)
    return out


# --------------------------------------------------------------------------- Grad-CAM baselines


def gradcam_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    layer: str,
    targets,
    method: str = "gradcam",
    *,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Grad-CAM or Grad-CAM++ maps of the true class, via `pytorch-grad-cam` (version ≥ 1.5).

    Uses ``GradCAM`` / ``GradCAMPlusPlus(model=model, target_layers=[model.get_submodule(layer)])`` with its
    defaults (no reshape_transform, no aug_smooth, no eigen_smooth) and ``ClassifierOutputTarget(int(t))``
    for each image: the map of the true class (GT-known localization). Images go through in chunks of
    `chunk_size`, on the device of the model's parameters.

    Side effects are undone: pytorch-grad-cam puts the model in eval mode, so every submodule's training flag
    is restored afterwards; its hooks are released (explicitly, not through its context manager, whose exit
    swallows IndexError); the parameters' ``.grad`` are put back as they were (the library zeroes them and
    back-propagates into them); gradients are enabled only inside the call, so it also works under
    ``torch.no_grad()``. The inputs are made to require gradients so that frozen models work too.

    Args:
        model: classifier returning logits (N, K); BatchNorm statistics are used in eval mode.
        images: (N, C, H, W) float input batch (any device).
        layer: name of the target layer in ``model.named_modules()``, typically the last conv block.
        targets: (N,) true class indices (long tensor or sequence of ints).
        method: "gradcam" or "gradcampp".
        chunk_size: images per forward/backward pass (≥ 1).

    Returns:
        (N, H, W) float32 CPU tensor at input resolution, each map min–max scaled to [0, 1] by the library
        (a map whose class evidence is nowhere positive comes back all zero).

    Raises:
        ValueError: unknown method, images not 4-D, a number of targets different from N, chunk_size < 1, or
            a layer name that is not a submodule (`mcmikd.errors.ConfigError`, a ValueError).
    """
    if method not in _METHODS:
        raise ValueError(f"unknown CAM method {method!r}; expected one of {_METHODS}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    target_list = [int(t) for t in (targets.reshape(-1).tolist() if isinstance(targets, torch.Tensor) else targets)]
    if len(target_list) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(target_list)} targets")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    try:
        module = model.get_submodule(layer)
    except AttributeError as exc:
        from mcmikd.errors import ConfigError

        raise ConfigError(f"cam layer '{layer}' is not a module of {type(model).__name__}; "
                          f"use a name from model.named_modules()") from exc

    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = GradCAM if method == "gradcam" else GradCAMPlusPlus
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    chunks: list[np.ndarray] = []
    try:
        with torch.enable_grad():
            cam = cam_class(model=model, target_layers=[module])
            try:
                for start in range(0, images.shape[0], chunk_size):
                    x = images[start:start + chunk_size].detach().to(device).requires_grad_(True)
                    chunk_targets = [ClassifierOutputTarget(t) for t in target_list[start:start + chunk_size]]
                    chunks.append(np.asarray(cam(input_tensor=x, targets=chunk_targets), dtype=np.float32))
            finally:
                cam.activations_and_grads.release()
                cam.outputs = None  # drop the retained graph now rather than at garbage collection
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.grad = g
    if not chunks:
        return torch.zeros(0, images.shape[-2], images.shape[-1], dtype=torch.float32)
    return torch.from_numpy(np.concatenate(chunks, axis=0))
