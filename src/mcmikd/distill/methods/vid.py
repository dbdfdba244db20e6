"""Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019), as RepDistiller
runs it: for each `feats[1:]` pair a 1×1-conv regressor (student C → teacher C → teacher C → teacher C)
predicts the mean of a Gaussian over the teacher's map, with a learned per-channel variance
softplus(log_scale) + ε; the loss is the mean negative log-likelihood (without the constant), summed over pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision, match_spatial


def vid_loss(pred_mean: torch.Tensor, teacher_feat: torch.Tensor, log_scale: torch.Tensor,
             eps: float = 1e-5) -> torch.Tensor:
    """mean over all entries of ½·((μ − t)²/σ² + log σ²), σ² = softplus(log_scale_c) + ε per channel."""
    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((pred_mean - teacher_feat).pow(2) / var + torch.log(var))).mean()


class VIDRegressor(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, init_pred_var: float = 5.0,
                 eps: float = 1e-5):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False),
        )
        # softplus(log_scale) + eps == init_pred_var at the start
        self.log_scale = nn.Parameter(torch.full((out_channels,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = match_spatial(f_s, f_t)
        mean = self.regressor(f_s)
        with full_precision(mean):
            return vid_loss(mean.float(), f_t.float(), self.log_scale.float(), self.eps)


class VID(Distiller):
    name = "vid"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0, "temperature": 4.0}

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        pairs = zip(ctx.student_shapes["feats"][1:], ctx.teacher_shapes["feats"][1:])
        self.heads["regressors"] = nn.ModuleList(VIDRegressor(s[0], t[0], t[0]) for s, t in pairs)

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        loss = sum(reg(f_s, f_t) for reg, f_s, f_t in zip(self.heads["regressors"], out.feats[1:], t.feats[1:]))
        terms["vid"] = self.hp["beta"] * loss
        return out.logits, terms
