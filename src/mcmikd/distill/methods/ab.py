"""Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons"
(AAAI 2019), as RepDistiller runs it: two stages.

Init stage (`init_epochs`, RepDistiller 30): the student's feature layers and per-stage connectors
(identity where channels and size agree, else a conv regressor without ReLU) learn to put the student's
pre-activation maps `preact_feats[1:]` on the same side of zero as the teacher's, with the margin-1
alternative-L2 loss, stage i of n weighted 2^(i−n+1), divided by the batch size, ×3/1000.
Main stage: RepDistiller adds no AB term (`loss_kd = 0`), so the student trains with γ·CE + α·KL and
RepDistiller's `-b 1` has no effect; `main_stage_loss: true` adds β·L_AB there as well (connectors trained on).
"""

from __future__ import annotations

import torch
from torch import nn

from mcmikd.distill.base import Distiller, InitStage
from mcmikd.distill.methods._common import ConvReg, conv_reg_problem, full_precision, parameters_feeding
from mcmikd.errors import ConfigError


def ab_boundary_loss(source: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Σ of (s+m)²·[s > −m ∧ t ≤ 0] + (s−m)²·[s ≤ m ∧ t > 0] over all entries (not averaged)."""
    neg = ((source > -margin) & (target <= 0)).to(source.dtype)
    pos = ((source <= margin) & (target > 0)).to(source.dtype)
    return ((source + margin).pow(2) * neg + (source - margin).pow(2) * pos).abs().sum()


def ab_loss(student_feats, teacher_feats, margin: float = 1.0) -> torch.Tensor:
    """Σ_i 2^(i−n+1) · boundary_loss_i / b · 3/1000 over the n (connected student, teacher) pre-activation pairs."""
    n = len(student_feats)
    b = student_feats[0].shape[0]
    total = 0.0
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        total = total + 2.0 ** (i - n + 1) * ab_boundary_loss(s, t, margin) / b / 1000 * 3
    return total


def _connector(s_shape, t_shape) -> nn.Module:
    if s_shape[0] == t_shape[0] and s_shape[1] == t_shape[1]:
        return nn.Identity()
    return ConvReg(s_shape, t_shape, use_relu=False)


class AB(Distiller):
    name = "ab"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0, "temperature": 4.0, "init_epochs": 30,
                "main_stage_loss": False}

    @classmethod
    def check_compatible(cls, student_shapes, teacher_shapes, hp):
        if not teacher_shapes:
            return
        s, t = student_shapes["preact_feats"][1:], teacher_shapes["preact_feats"][1:]
        if len(s) != len(t):
            raise ConfigError(f"ab: the student has {len(s)} stages and the teacher {len(t)}; "
                              f"AB pairs stages one to one, pick networks with as many stages")
        for i, (a, b) in enumerate(zip(s, t)):
            if not (a[0] == b[0] and a[1] == b[1]):
                problem = conv_reg_problem(a, b)
                if problem:
                    raise ConfigError(f"ab: stage {i + 1}: {problem}")

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        self.check_compatible(ctx.student_shapes, ctx.teacher_shapes, self.hp)
        pairs = zip(ctx.student_shapes["preact_feats"][1:], ctx.teacher_shapes["preact_feats"][1:])
        self.heads["connectors"] = nn.ModuleList(_connector(s, t) for s, t in pairs)

    def _connected_loss(self, images):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        g_s = [c(f) for c, f in zip(self.heads["connectors"], out.preact_feats[1:])]
        with full_precision(images):
            loss = ab_loss([g.float() for g in g_s], [f.float() for f in t.preact_feats[1:]])
        return out, t, loss

    def _init_loss(self, images, targets):
        return {"ab_init": self._connected_loss(images)[2]}

    def init_stage(self):
        epochs = int(self.hp["init_epochs"])
        if epochs <= 0:
            return None
        shape = (self.ctx.in_channels, self.ctx.image_size, self.ctx.image_size)
        feature_params = parameters_feeding(self.student, lambda f: f.preact_feats[1:], shape)
        return InitStage(epochs=epochs, parameters=list(self.heads.parameters()) + feature_params,
                         loss=self._init_loss)

    def learnable_parameters(self):
        if self.hp["main_stage_loss"]:
            return super().learnable_parameters()
        return list(self.student.parameters())

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        if self.hp["main_stage_loss"]:
            out, t, loss = self._connected_loss(images)
            terms = self.base_terms(out.logits, t.logits, targets)
            terms["ab"] = self.hp["beta"] * loss
            return out.logits, terms
        logits = self.student(images)
        teacher_logits = self.teacher_logits(images) if self.hp["alpha"] else None
        return logits, self.base_terms(logits, teacher_logits, targets)
