"""Park et al., "Relational Knowledge Distillation" (CVPR 2019), as RepDistiller runs it on the pooled
embeddings: w_d · distance-wise loss + w_a · angle-wise loss, both Huber (smooth-L1, δ = 1).

Distances are normalised by their mean over the positive entries; angles are the cosines between the
difference vectors e_i − e_j and e_k − e_j of every triplet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = _pairwise_distances(e)
    positive = (d > 0).to(d.dtype)
    return d / ((d * positive).sum() / positive.sum())


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, w_dist: float = 25.0,
             w_angle: float = 50.0) -> torch.Tensor:
    """w_d·Huber(ψ_D(s), ψ_D(t)) + w_a·Huber(ψ_A(s), ψ_A(t)) of embeddings (b, ...), RepDistiller's `RKDLoss`.

    With fewer than two samples there is no pair (the mean distance would be 0/0): the loss is 0, still
    differentiable. (The engine never trains on one image; this keeps the function total.)
    """
    s = student_emb.flatten(1)
    t = teacher_emb.flatten(1).detach()
    if len(s) < 2:
        return s.sum() * 0.0
    loss_d = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))
    loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
    return w_dist * loss_d + w_angle * loss_a


class RKD(Distiller):
    name = "rkd"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0, "temperature": 4.0, "w_dist": 25.0, "w_angle": 50.0}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        with full_precision(images):
            terms["rkd"] = self.hp["beta"] * rkd_loss(out.pooled.float(), t.pooled.float(),
                                                      self.hp["w_dist"], self.hp["w_angle"])
        return out.logits, terms
