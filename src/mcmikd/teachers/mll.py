"""MLL teacher: maximum log-likelihood, i.e. ordinary cross-entropy training from scratch (paper §2).

`stop_epoch` (a path hyper-parameter, default 0 = none): the teacher is the run stopped after that epoch, for the
early-stopped teachers of the paper's Fig. 2 (Ye et al., ICLR 2024, §4: "a more accurate teacher with lower CMI
can be a worse teacher"). Its variant is `mll-e<epoch>` (`mll` when not stopped, so the full teacher's folder
and parameters are unchanged). The recipe is *not* shortened: the job stops the full recipe after `stop_epoch`
epochs (`mcmikd.jobs.teacher`), so the stopped teacher is the full run's state after that epoch for every schedule —
also for `cosine`, whose learning rate depends on the recipe's length (`engine.Recipe.lr_at`); a recipe shortened to
`stop_epoch` epochs would equal it only for `multistep` and `constant`.
"""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.teachers.base import TeacherObjective


def ce_loss(logits, labels) -> dict:
    """{'ce': mean cross-entropy} of logits (N, C) against int64 labels (N,), in nats."""
    import torch.nn.functional as F

    return {"ce": F.cross_entropy(logits, labels)}


class MLL(TeacherObjective):
    name = "mll"
    multiprocess = True
    label = "MLL"
    color = "#0173B2"
    defaults = {"stop_epoch": 0}
    path_keys = ("stop_epoch",)

    @classmethod
    def check_hp(cls, hp: dict, where: str) -> None:
        super().check_hp(hp, where)
        stop = hp.get("stop_epoch", 0)
        if isinstance(stop, bool) or not isinstance(stop, int) or stop < 0:
            raise ConfigError(f"config key '{where}.stop_epoch': {stop!r} is not an epoch; give an integer ≥ 1 "
                              f"(0: not stopped)")

    @classmethod
    def resolve_hp(cls, hp: dict, arch: str) -> dict:
        """Without a stop epoch the hyper-parameters stay {} (the full teacher's job parameters as before)."""
        hp = {**cls.defaults, **hp}
        if not hp.get("stop_epoch"):
            hp.pop("stop_epoch")
        return hp

    @classmethod
    def variant(cls, hp: dict) -> str:
        """'mll', or 'mll-e<stop_epoch>' for a teacher stopped after that epoch."""
        stop = int(hp.get("stop_epoch") or 0)
        return cls.name if not stop else f"{cls.name}-e{stop}"

    @classmethod
    def describe(cls, hp: dict) -> str:
        stop = int(hp.get("stop_epoch") or 0)
        return cls.label if not stop else f"{cls.label} (epoch {stop})"

    def stop_epoch(self) -> int | None:
        """The epoch after which the job stops training (None: the whole recipe)."""
        return int(self.hp.get("stop_epoch") or 0) or None

    @staticmethod
    def loss(logits, labels) -> dict:
        return ce_loss(logits, labels)
