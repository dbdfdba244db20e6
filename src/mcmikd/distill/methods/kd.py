"""Hinton et al., "Distilling the Knowledge in a Neural Network" (2015): match softened teacher outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch (RepDistiller's DistillKL)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature**2


class KD(Distiller):
    name = "kd"
    multiprocess = True  # per-image terms averaged over the batch (mcmikd.distributed)
    defaults = {"gamma": 0.1, "alpha": 0.9, "temperature": 4.0}
    weight_key = "alpha"  # the KL term's weight (RepDistiller -a); γ (CE) stays

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images)
        terms = {"ce": self.ce_term(logits, targets),
                 "kd": self.hp["alpha"] * kd_loss(logits, teacher_logits, self.hp["temperature"])}
        return logits, terms
