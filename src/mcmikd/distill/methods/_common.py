"""Pieces several feature-based distillers share: spatial matching, RepDistiller's convolutional regressor,
fp32 loss arithmetic, and finding which student parameters feed a feature list (for the init stages).

Shapes follow `mcmikd.models.feature_shapes`: one map is (C, H, W), without the batch dimension.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.errors import ConfigError
from mcmikd.models.base import adaptive_avg_pool


# --------------------------------------------------------------------------------------------- numerics
def full_precision(like: torch.Tensor):
    """Loss arithmetic in fp32 even inside a bf16 autocast region (the heads still run under autocast).

    Use with inputs cast by `.float()`; outside autocast this changes nothing.
    """
    if like.device.type in ("cuda", "cpu"):
        return torch.autocast(like.device.type, enabled=False)
    return contextlib.nullcontext()


def floats(tensors):
    return [t.float() for t in tensors]


# --------------------------------------------------------------------------------------------- spatial matching
def match_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two maps to the spatial size of the smaller (RepDistiller's rule, by height)."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = adaptive_avg_pool(f_s, tuple(f_t.shape[2:]))
    elif s_h < t_h:
        f_t = adaptive_avg_pool(f_t, tuple(f_s.shape[2:]))
    return f_s, f_t


# --------------------------------------------------------------------------------------------- regressor
def conv_reg_problem(s_shape, t_shape) -> str | None:
    """Why a ConvReg cannot map a student map of `s_shape` onto a teacher map of `t_shape` (None if it can)."""
    _, s_h, s_w = s_shape
    _, t_h, t_w = t_shape
    if s_h == 2 * t_h or 2 * s_h == t_h or (s_h >= t_h and s_w >= t_w):
        return None
    return f"cannot regress a {s_h}×{s_w} student map onto a {t_h}×{t_w} teacher map"


class ConvReg(nn.Module):
    """RepDistiller's convolutional regressor (FitNet hint, AB connector): conv → BN (→ ReLU).

    Student maps twice the teacher's size go through a stride-2 3×3 conv, half the size through a 4×4
    stride-2 transposed conv, otherwise a valid conv whose kernel absorbs the size difference.
    """

    def __init__(self, s_shape, t_shape, use_relu: bool = True):
        super().__init__()
        problem = conv_reg_problem(s_shape, t_shape)
        if problem:
            raise ConfigError(problem)
        s_c, s_h, s_w = s_shape
        t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        else:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x


# --------------------------------------------------------------------------------------------- misc
def merged(cls, hp: dict) -> dict:
    return {**cls.defaults, **(hp or {})}


def parameters_feeding(model: nn.Module, select, image_shape: tuple[int, int, int]) -> list[nn.Parameter]:
    """The parameters of `model` that `select(model.forward_features(x))` (a list of maps) depends on.

    RepDistiller's init stages train `model_s.get_feat_modules()`: everything up to the last feature map, not
    the classifier (nor, e.g., WRN's final BN). Here the same set is found by autograd reachability on one
    tiny probe batch in eval mode (no BatchNorm statistics change, `.grad` is not touched).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            probe = torch.zeros(2, *image_shape, device=device)
            feats = select(model.forward_features(probe))
            total = sum(f.float().sum() for f in feats)
            grads = torch.autograd.grad(total, params, allow_unused=True)
    finally:
        model.train(was_training)
    return [p for p, g in zip(params, grads) if g is not None]
