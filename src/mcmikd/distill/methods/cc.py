"""Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019), in the form RepDistiller
runs (the authors' code): both pooled embeddings go through learnable linear embeddings (feat_dim 128), and
with δ = |e_s − e_t| the loss is the batch mean of Σ_k δ_i,k · δ_i+1,k over consecutive samples.
"""

from __future__ import annotations

import torch
from torch import nn

from mcmikd.distill.base import Distiller
from mcmikd.distill.methods._common import full_precision


def cc_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """mean_i Σ_k δ_i,k · δ_i+1,k with δ = |e_s − e_t|, embeddings (b, d); RepDistiller's `Correlation`.

    With fewer than two samples there is no consecutive pair: the loss is 0 (still differentiable), not the
    NaN of an empty mean. (The engine never trains on one image; this keeps the function total.)
    """
    delta = (student_emb - teacher_emb).abs()
    if len(delta) < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class LinearEmbed(nn.Module):
    """A linear map of the flattened input (RepDistiller's LinearEmbed, no normalisation)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class CC(Distiller):
    name = "cc"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 0.02, "temperature": 4.0, "feat_dim": 128}

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        dim = int(self.hp["feat_dim"])
        self.heads["embed_s"] = LinearEmbed(ctx.student_shapes["pooled"], dim)
        self.heads["embed_t"] = LinearEmbed(ctx.teacher_shapes["pooled"], dim)

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        e_s = self.heads["embed_s"](out.pooled)
        e_t = self.heads["embed_t"](t.pooled)
        with full_precision(images):
            terms["cc"] = self.hp["beta"] * cc_loss(e_s.float(), e_t.float())
        return out.logits, terms
