"""MLL teacher: maximum log-likelihood, i.e. ordinary cross-entropy training from scratch (paper §2)."""

from __future__ import annotations

from mcmikd.teachers.base import TeacherObjective


def ce_loss(logits, labels) -> dict:
    """{'ce': mean cross-entropy} of logits (N, C) against int64 labels (N,), in nats."""
    import torch.nn.functional as F

    return {"ce": F.cross_entropy(logits, labels)}


class MLL(TeacherObjective):
    name = "mll"
    label = "MLL"
    color = "#0173B2"

    @staticmethod
    def loss(logits, labels) -> dict:
        return ce_loss(logits, labels)
