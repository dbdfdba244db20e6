"""Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017), as RepDistiller runs it.

Attention map of a feature map: the channel mean of |f|^p, flattened and L2-normalised per sample. The loss
is the mean squared difference of the student's and teacher's maps, summed over the pairs `feats[1:]`
(RepDistiller's `feat[1:-1]`; lists of different length pair up from the first stage). Where spatial sizes
differ the larger map is average-pooled to the smaller one first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import floats, full_precision, match_spatial


def attention_map(f: torch.Tensor, p: float = 2) -> torch.Tensor:
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_feats, teacher_feats, p: float = 2) -> torch.Tensor:
    """Σ over pairs of mean((a_s − a_t)²) with a = normalize(mean_c f^p)."""
    total = 0.0
    for f_s, f_t in zip(student_feats, teacher_feats):
        f_s, f_t = match_spatial(f_s, f_t)
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


class AT(Distiller):
    name = "at"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1000.0, "temperature": 4.0, "p": 2}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        with full_precision(images):
            terms["at"] = self.hp["beta"] * at_loss(floats(out.feats[1:]), floats(t.feats[1:]), self.hp["p"])
        return out.logits, terms
