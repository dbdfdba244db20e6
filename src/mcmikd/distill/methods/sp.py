"""Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019), as RepDistiller runs it.

The batch Gram matrix of the flattened last stage map (`feats[-1]`, RepDistiller's `feat[-2]`), each row
L2-normalised; the loss is ‖G_t − G_s‖_F² / b².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import floats, full_precision


def similarity_matrix(f: torch.Tensor) -> torch.Tensor:
    f = f.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


def sp_loss(student_feats, teacher_feats) -> torch.Tensor:
    """Σ over pairs of ‖normalize(F_t F_tᵀ) − normalize(F_s F_sᵀ)‖_F² / b²."""
    total = 0.0
    for f_s, f_t in zip(student_feats, teacher_feats):
        b = f_s.shape[0]
        total = total + (similarity_matrix(f_t) - similarity_matrix(f_s)).pow(2).sum() / (b * b)
    return total


class SP(Distiller):
    name = "sp"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 3000.0, "temperature": 4.0}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        with full_precision(images):
            terms["sp"] = self.hp["beta"] * sp_loss(floats(out.feats[-1:]), floats(t.feats[-1:]))
        return out.logits, terms
