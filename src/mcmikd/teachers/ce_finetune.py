"""The control teacher: the MLL teacher fine-tuned with MCMI's recipe (same start, schedule, seed) but with
cross-entropy alone (λ = 0). Set beside an MCMI teacher, it separates the effect of the CMI term from the effect
of more training (docs/paper.md, "What fine-tuning with frozen centroids does")."""

from __future__ import annotations

from mcmikd.teachers.base import TeacherObjective
from mcmikd.teachers.mll import ce_loss


class CEFinetune(TeacherObjective):
    name = "ce_finetune"
    multiprocess = True
    label = "CE-FT"
    color = "#029E73"
    start_from = "mll"

    @classmethod
    def collapse_advice(cls, hp: dict) -> str:
        return "lower teachers.finetuning.lr"

    @staticmethod
    def loss(logits, labels) -> dict:
        return ce_loss(logits, labels)
