"""Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021), after its official CIFAR-100 setup
(and mdistiller's port): attention-based fusion (ABF) + hierarchical context loss (HCL).

Levels: the student's `feats[1:]` and pooled vector (as a 1×1 map) against the teacher's `preact_feats[1:]`
and pooled vector. Going from the deepest level up, each ABF maps the student level to a common width
(min(512, pooled width)), fuses it with the upsampled output of the deeper level through a two-channel
sigmoid attention, resizes it (nearest) to the teacher's size and projects it to the teacher's channels.
HCL per level: MSE plus the MSEs after adaptive average pooling to 4×4, 2×2, 1×1 (only sizes below the map's),
weighted 1, ½, ¼, ⅛ and normalised by the weights' sum; summed over levels.
L = γ·CE + min(epoch / warmup, 1)·β·HCL, warm-up 20 epochs, β the official per-pair weight (5 unless listed).

Channels and sizes come from the networks' feature shapes (no per-pair tables); where the two networks have
a different number of levels, the deepest ones are paired.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import floats, full_precision
from mcmikd.models.base import adaptive_avg_pool

# --kd-loss-weight of the official CIFAR-100 script, keyed by (teacher, student); 5.0 otherwise.
OFFICIAL_WEIGHT = {
    ("resnet56", "resnet20"): 0.6,
    ("resnet110", "resnet32"): 1.0,
    ("resnet32x4", "ShuffleV2"): 8.0,
}
DEFAULT_WEIGHT = 5.0


def hcl_loss(student_feats, teacher_feats) -> torch.Tensor:
    """Hierarchical context loss summed over the (student, teacher) map pairs of equal shape."""
    total = 0.0
    for f_s, f_t in zip(student_feats, teacher_feats):
        h = f_s.shape[2]
        loss = F.mse_loss(f_s, f_t)
        weight, norm = 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(adaptive_avg_pool(f_s, size), adaptive_avg_pool(f_t, size))
            norm += weight
        total = total + loss / norm
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the output of the level below it."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual=None, out_size=None):
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _levels(shapes: dict, preact: bool) -> list[tuple[int, int, int]]:
    maps = shapes["preact_feats" if preact else "feats"][1:]
    return [tuple(s) for s in maps] + [(shapes["pooled"], 1, 1)]


class ReviewKD(Distiller):
    name = "reviewkd"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": None, "temperature": 4.0, "warmup": 20}
    weight_key = "beta"  # the HCL weight (official --kd-loss-weight)
    weight_table = ("OFFICIAL_WEIGHT", "DEFAULT_WEIGHT")

    @staticmethod
    def official_weight(teacher_arch: str, student_arch: str) -> float:
        return OFFICIAL_WEIGHT.get((teacher_arch, student_arch), DEFAULT_WEIGHT)

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        beta = self.hp["beta"]
        self.weight = float(beta) if beta is not None else self.official_weight(ctx.teacher_arch, ctx.student_arch)
        s_levels = _levels(ctx.student_shapes, preact=False)
        t_levels = _levels(ctx.teacher_shapes, preact=True)
        self.n_levels = n = min(len(s_levels), len(t_levels))
        s_levels, t_levels = s_levels[-n:], t_levels[-n:]
        mid = min(512, s_levels[-1][0])
        abfs = [ABF(s[0], mid, t[0], fuse=i < n - 1) for i, (s, t) in enumerate(zip(s_levels, t_levels))]
        self.heads["abfs"] = nn.ModuleList(abfs[::-1])  # deepest level first
        self.out_sizes = [(t[1], t[2]) for t in t_levels[::-1]]

    def fused_features(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """ABF outputs for the student levels (shallow → deep), each shaped like the matching teacher level."""
        x = feats[-self.n_levels:][::-1]
        results = []
        residual = None
        for level, abf, size in zip(x, self.heads["abfs"], self.out_sizes):
            out, residual = abf(level, residual, size)
            results.insert(0, out)
        return results

    def step_key(self, epoch: int) -> float:
        """The warm-up weight min(epoch / warmup, 1) of 1-based `epoch` (all forward_train takes from it)."""
        return min(epoch / self.hp["warmup"], 1.0) if self.hp["warmup"] else 1.0

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        if self.training and len(images) < 2:  # the ABF's BatchNorm on the 1×1 pooled level needs two samples
            raise ValueError(f"reviewkd needs at least two images per training batch, got {len(images)}")
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        fused = self.fused_features(list(out.feats[1:]) + [out.pooled[:, :, None, None]])
        t_levels = (list(t.preact_feats[1:]) + [t.pooled[:, :, None, None]])[-self.n_levels:]
        warm = self.step_key(epoch)
        with full_precision(images):
            terms["reviewkd"] = warm * self.weight * hcl_loss(floats(fused), floats(t_levels))
        return out.logits, terms
