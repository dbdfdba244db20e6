"""Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV 2018),
as RepDistiller runs it on the pooled embeddings.

Cosine similarities of the batch, mapped to [0, 1] and normalised per row into conditional probabilities;
the loss is the KL divergence of the teacher's from the student's, averaged over the whole b×b matrix.
"""

from __future__ import annotations

import torch

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision

EPS = 1e-7


def _conditional_probabilities(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + EPS)
    x = torch.nan_to_num(x, nan=0.0)
    sim = (x @ x.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """mean_ij  q_ij · log((q_ij + ε) / (p_ij + ε)), q from the teacher, p from the student, ε = 1e-7."""
    p = _conditional_probabilities(student_emb)
    q = _conditional_probabilities(teacher_emb)
    return (q * torch.log((q + EPS) / (p + EPS))).mean()


class PKT(Distiller):
    name = "pkt"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 30000.0, "temperature": 4.0}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        with full_precision(images):
            terms["pkt"] = self.hp["beta"] * pkt_loss(out.pooled.float(), t.pooled.float())
        return out.logits, terms
