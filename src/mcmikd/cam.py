"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the first principal component of a layer's activations.

For activations A (C, H, W) of one image, O = reshape(A) is (H·W) × C; with O = UΣVᵀ the map is O·v₁,
reshaped to H × W, passed through ReLU and min–max scaled to [0, 1]. No gradients, no class score.

Two choices the paper leaves open, both fixed here and documented in docs/paper.md ("Eigen-CAM"):
* centring: with `center=True` (pytorch-grad-cam's convention) each channel's spatial mean is removed before
  the SVD; the paper's formula (`center=False`) uses O as it is.
* sign: v₁ is defined up to sign, and after the ReLU the sign decides which half of the map survives. We orient
  v₁ so that the projection correlates positively with the channel-mean activation map (the map where the
  layer is "on"), so the result follows the activations, not the LAPACK build.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def principal_projection(activations: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Signed projection O·v₁ for each image of a batch (N, C, H, W) -> (N, H, W), sign rule applied."""
    if activations.dim() != 4:
        raise ValueError(f"eigen_cam expects activations of shape (N, C, H, W), got {tuple(activations.shape)}")
    n, c, h, w = activations.shape
    o = activations.detach().float().reshape(n, c, h * w).transpose(1, 2)  # (N, HW, C)
    o = torch.nan_to_num(o)
    if center:
        o = o - o.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(o, full_matrices=False)
    projection = torch.bmm(o, vh[:, 0, :].unsqueeze(2)).squeeze(2)  # (N, HW)
    reference = activations.detach().float().reshape(n, c, h * w).mean(dim=1)  # channel-mean map
    reference = reference - reference.mean(dim=1, keepdim=True)
    agreement = (projection * reference).sum(dim=1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign.unsqueeze(1)).reshape(n, h, w)


def eigen_cam(activations: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Eigen-CAM maps (N, H, W) in [0, 1] from activations (N, C, H, W): projection, ReLU, min–max per image."""
    cam = principal_projection(activations, center=center).clamp_min(0)
    flat = cam.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    flat = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return flat.reshape(cam.shape)


def upsample(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, H, W) maps to `size`, kept in [0, 1]."""
    return F.interpolate(cams.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1)


class ActivationRecorder:
    """Context manager that records the (tensor) output of `model.get_submodule(layer)` during forward passes."""

    def __init__(self, model: torch.nn.Module, layer: str):
        try:
            self.module = model.get_submodule(layer)
        except AttributeError as exc:
            from mcmikd.errors import ConfigError

            raise ConfigError(f"cam layer '{layer}' is not a module of {type(model).__name__}; "
                              f"set cam.layer to 'auto' or to a name from model.named_modules()") from exc
        self.layer = layer
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _module, _inputs, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        self.output = output.detach()

    def __enter__(self) -> ActivationRecorder:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@torch.no_grad()
def model_activations(model: torch.nn.Module, images: torch.Tensor, layer: str):
    """(activations (N, C, H, W) of `model.get_submodule(layer)`, logits) of one eval-mode forward pass over a batch;
    the model is left in the mode it was found in (every submodule's own flag restored). ConfigError for a layer
    that is not a module or does not give a 4-D map."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with ActivationRecorder(model, layer) as rec:
            logits = model(images)
    finally:
        for m, training in modes.items():
            m.train(training)
    if rec.output is None or rec.output.dim() != 4:
        from mcmikd.errors import ConfigError

        raise ConfigError(f"cam layer '{layer}' did not produce a 4-D activation map; choose a convolutional stage")
    return rec.output, logits


@torch.no_grad()
def model_eigen_cam(model: torch.nn.Module, images: torch.Tensor, layer: str, center: bool = True):
    """Eigen-CAM of `model` at `layer` for a batch of images: (maps upsampled to the input size, logits). The model
    runs in eval mode and is left in the mode it was found in (every submodule's own flag restored)."""
    activations, logits = model_activations(model, images, layer)
    return upsample(eigen_cam(activations, center=center), tuple(images.shape[-2:])), logits
