"""Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015), as RepDistiller runs it.

One stage: a convolutional regressor maps the student's map at `hint_layer` (RepDistiller's default 2,
i.e. `feats[2]`) onto the teacher's map there, and β·MSE is added to γ·CE (+ α·KL) in every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import ConvReg, conv_reg_problem, full_precision, merged
from mcmikd.errors import ConfigError


def fitnet_loss(student_regressed: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student map and the teacher's map (same shape)."""
    return F.mse_loss(student_regressed, teacher_feat)


class FitNet(Distiller):
    name = "fitnet"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 100.0, "temperature": 4.0, "hint_layer": 2}

    @classmethod
    def check_compatible(cls, student_shapes, teacher_shapes, hp):
        if not teacher_shapes:
            return
        layer = merged(cls, hp)["hint_layer"]
        n = min(len(student_shapes["feats"]), len(teacher_shapes["feats"]))
        if not isinstance(layer, int) or not 0 <= layer < n:
            raise ConfigError(f"fitnet: hint_layer {layer!r} must be an integer in 0..{n - 1}")
        problem = conv_reg_problem(student_shapes["feats"][layer], teacher_shapes["feats"][layer])
        if problem:
            raise ConfigError(f"fitnet: hint layer {layer}: {problem}")

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        self.check_compatible(ctx.student_shapes, ctx.teacher_shapes, self.hp)
        layer = self.hp["hint_layer"]
        self.heads["regressor"] = ConvReg(ctx.student_shapes["feats"][layer], ctx.teacher_shapes["feats"][layer])

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        layer = self.hp["hint_layer"]
        regressed = self.heads["regressor"](out.feats[layer])
        with full_precision(images):
            terms["fitnet"] = self.hp["beta"] * fitnet_loss(regressed.float(), t.feats[layer].float())
        return out.logits, terms
