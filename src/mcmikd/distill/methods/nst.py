"""Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017), as
RepDistiller runs it: squared MMD with the polynomial kernel k(x, y) = (xᵀy)² between the channels of the
student and teacher maps (each channel's spatial vector L2-normalised), summed over `feats[1:]` pairs after
pooling the larger map to the smaller one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import floats, full_precision, match_spatial


def _poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_loss(student_feats, teacher_feats) -> torch.Tensor:
    """Σ over pairs of mean k(t, t) + mean k(s, s) − 2 mean k(s, t) (means over batch and channel pairs)."""
    total = 0.0
    for f_s, f_t in zip(student_feats, teacher_feats):
        f_s, f_t = match_spatial(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        total = total + (_poly_kernel_mean(f_t, f_t).detach() + _poly_kernel_mean(f_s, f_s)
                         - 2 * _poly_kernel_mean(f_s, f_t))
    return total


class NST(Distiller):
    name = "nst"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 50.0, "temperature": 4.0}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        with full_precision(images):
            terms["nst"] = self.hp["beta"] * nst_loss(floats(out.feats[1:]), floats(t.feats[1:]))
        return out.logits, terms
