"""Huang et al., "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022), with its official
CIFAR-100 settings (hunto/image_classification_sota, configs/strategies/distill/dist_cifar.yaml with
`kd: dist_t4`): L = γ·CE + β·τ²·[β_inter·(1 − ρ_inter) + β_intra·(1 − ρ_intra)], CE weight 1, β (the
kd_loss_weight) 2, τ 4, β_inter = β_intra = 1, where ρ is the Pearson correlation of softmax(z/τ) of student
and teacher, averaged over the samples (inter-class relation) and over the classes (intra-class relation).
"""

from __future__ import annotations

import torch

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, gamma: float,
              temperature: float) -> torch.Tensor:
    """τ²·[β·(1 − mean_i ρ(y_s,i·, y_t,i·)) + γ·(1 − mean_c ρ(y_s,·c, y_t,·c))], y = softmax(z/τ)."""
    y_s = torch.softmax(student_logits / temperature, dim=1)
    y_t = torch.softmax(teacher_logits / temperature, dim=1)
    inter = 1 - _pearson_rows(y_s, y_t).mean()
    intra = 1 - _pearson_rows(y_s.t(), y_t.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


class DIST(Distiller):
    name = "dist"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 2.0, "temperature": 4.0, "inter_weight": 1.0,
                "intra_weight": 1.0}

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images)
        terms = self.base_terms(logits, teacher_logits, targets)
        with full_precision(images):
            terms["dist"] = self.hp["beta"] * dist_loss(logits.float(), teacher_logits.float(),
                                                        self.hp["inter_weight"], self.hp["intra_weight"],
                                                        self.hp["temperature"])
        return logits, terms
