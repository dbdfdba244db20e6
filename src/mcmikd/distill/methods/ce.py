"""Plain cross-entropy training: the "student without KD" baseline, and how MLL teachers are trained."""

from __future__ import annotations

from mcmikd.distill.base import Distiller


class CE(Distiller):
    name = "ce"
    multiprocess = True  # per-image terms averaged over the batch (mcmikd.distributed)
    uses_teacher = False
    defaults = {"gamma": 1.0}
    weight_key = None  # no teacher term to weight

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        return logits, {"ce": self.ce_term(logits, targets)}
