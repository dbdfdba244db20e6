"""Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), with its official CIFAR-100 settings
(mdistiller): L = γ·CE + min(epoch / warmup, 1) · (α·TCKD + β·NCKD), CE weight 1, α 1, T 4, warm-up over the
first 20 epochs, and β per teacher–student pair from the official configs (8 where none is given).

TCKD is the KL divergence between the binary (target, non-target) distributions of teacher and student;
NCKD the KL divergence between their distributions over the non-target classes; both × T², batch means.
Here `alpha` and `beta` are DKD's own TCKD/NCKD weights (not RepDistiller's KL/feature weights), and
`beta: null` (the default) means "the official value for this pair".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision

# β (NCKD weight) of the official CIFAR-100 and ImageNet configs, keyed by (teacher, student); 8.0 otherwise.
OFFICIAL_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    # mdistiller's ImageNet configs (configs/imagenet/r34_r18/dkd.yaml, r50_mv1/dkd.yaml; with T 1, warm-up 1 epoch)
    ("resnet34", "resnet18"): 0.5,
    ("resnet50", "MobileNetV1"): 2.0,
}
DEFAULT_BETA = 8.0


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """α·TCKD + β·NCKD (each × T², averaged over the batch)."""
    # the target mask (b, C); a comparison rather than F.one_hot, whose CPU range check reads the labels on the host
    gt = target.unsqueeze(1) == torch.arange(student_logits.shape[1], device=target.device)
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * temperature**2 / target.shape[0]
    # the target class is pushed out of both softmaxes (official offset of 1000)
    log_q_s = F.log_softmax(student_logits / temperature - 1000.0 * gt, dim=1)
    q_t = F.softmax(teacher_logits / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="sum") * temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


class DKD(Distiller):
    name = "dkd"
    multiprocess = True  # per-image terms averaged over the batch (mcmikd.distributed)
    defaults = {"gamma": 1.0, "alpha": 1.0, "beta": None, "temperature": 4.0, "warmup": 20}
    weight_key = "beta"  # NCKD, the term DKD tunes per pair (α, TCKD, stays 1)
    weight_table = ("OFFICIAL_BETA", "DEFAULT_BETA")

    @staticmethod
    def official_beta(teacher_arch: str, student_arch: str) -> float:
        return OFFICIAL_BETA.get((teacher_arch, student_arch), DEFAULT_BETA)

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        beta = self.hp["beta"]
        self.beta = float(beta) if beta is not None else self.official_beta(ctx.teacher_arch, ctx.student_arch)

    def step_key(self, epoch: int) -> float:
        """The warm-up weight min(epoch / warmup, 1) of 1-based `epoch` (all forward_train takes from it)."""
        return min(epoch / self.hp["warmup"], 1.0) if self.hp["warmup"] else 1.0

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images)
        warm = self.step_key(epoch)
        terms = {"ce": self.ce_term(logits, targets)}
        with full_precision(images):
            terms["dkd"] = warm * dkd_loss(logits.float(), teacher_logits.float(), targets, self.hp["alpha"],
                                           self.beta, self.hp["temperature"])
        return logits, terms
