"""Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer
Learning" (CVPR 2017), as RepDistiller runs it: two stages.

FSP matrix of two consecutive maps (the larger pooled to the smaller): G_ij = mean over positions of
bottom_i · top_j. Init stage (`init_epochs`, RepDistiller 30): the student's feature layers learn to match the
teacher's FSP matrices of all consecutive `feats` pairs (mean squared error, summed over pairs). Main stage:
RepDistiller adds no FSP term (`loss_kd = 0`), so RepDistiller's `-b 50` has no effect; `main_stage_loss: true`
adds β·L_FSP there as well. Needs the same number of maps and the same channels in both networks.
"""

from __future__ import annotations

import torch

from mcmikd.distill.base import Distiller, InitStage
from mcmikd.distill.methods._common import floats, full_precision, match_spatial, parameters_feeding
from mcmikd.errors import ConfigError


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """(b, C_top, C_bottom) matrix of spatial means of products (RepDistiller's orientation)."""
    bottom, top = match_spatial(bottom, top)
    return torch.bmm(top.flatten(2), bottom.flatten(2).transpose(1, 2)) / bottom[0, 0].numel()


def fsp_matrices(feats) -> list[torch.Tensor]:
    return [fsp_matrix(feats[i], feats[i + 1]) for i in range(len(feats) - 1)]


def fsp_loss(student_feats, teacher_feats) -> torch.Tensor:
    """Σ over consecutive pairs of mean((G_s − G_t)²)."""
    total = 0.0
    for g_s, g_t in zip(fsp_matrices(student_feats), fsp_matrices(teacher_feats)):
        total = total + (g_s - g_t).pow(2).mean()
    return total


class FSP(Distiller):
    name = "fsp"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 50.0, "temperature": 4.0, "init_epochs": 30,
                "main_stage_loss": False}

    @classmethod
    def check_compatible(cls, student_shapes, teacher_shapes, hp):
        if not teacher_shapes:
            return
        s = [c for c, _, _ in student_shapes["feats"]]
        t = [c for c, _, _ in teacher_shapes["feats"]]
        if s != t:
            raise ConfigError(f"fsp needs feature maps with the same channels in student and teacher, "
                              f"got {s} and {t}; use a same-family pair or another method")

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        self.check_compatible(ctx.student_shapes, ctx.teacher_shapes, self.hp)

    def _loss(self, images):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        with full_precision(images):
            loss = fsp_loss(floats(out.feats), floats(t.feats))
        return out, t, loss

    def _init_loss(self, images, targets):
        return {"fsp_init": self._loss(images)[2]}

    def init_stage(self):
        epochs = int(self.hp["init_epochs"])
        if epochs <= 0:
            return None
        shape = (self.ctx.in_channels, self.ctx.image_size, self.ctx.image_size)
        return InitStage(epochs=epochs, parameters=parameters_feeding(self.student, lambda f: f.feats, shape),
                         loss=self._init_loss)

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        if self.hp["main_stage_loss"]:
            out, t, loss = self._loss(images)
            terms = self.base_terms(out.logits, t.logits, targets)
            terms["fsp"] = self.hp["beta"] * loss
            return out.logits, terms
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images) if self.hp["alpha"] else None
        return logits, self.base_terms(logits, teacher_logits, targets)
