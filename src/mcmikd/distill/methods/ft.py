"""Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer" (NeurIPS 2018), as
RepDistiller runs it: two stages on the last stage map (`feats[-1]`, RepDistiller's `feat[-2]`).

Init stage (`init_epochs`, RepDistiller 30): a paraphraser (3 convs to k·C_t channels, k = 0.5, then 3
transposed convs back; LeakyReLU 0.1, no BN) learns to reconstruct the teacher's map (MSE).
Main stage: the paraphraser's encoder is frozen and gives the teacher factor; a translator (3 convs with BN
to k·C_t channels) gives the student factor; L_FT = mean |φ(F_s) − φ(F_t)| with φ(F) the L2-normalised
channel mean of F², after pooling the larger map to the smaller one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.distill.base import Distiller, InitStage
from mcmikd.distill.methods._common import full_precision, match_spatial

# RepDistiller pre-trains the paraphraser with lr 0.01 for these students, with the student's lr otherwise.
_SMALL_INIT_LR_STUDENTS = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                           "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"}


def factor(f: torch.Tensor) -> torch.Tensor:
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def ft_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor) -> torch.Tensor:
    """mean |φ(F_s) − φ(F_t)|, φ(F) = normalize(mean_c F²); larger map pooled to the smaller first."""
    f_s, f_t = match_spatial(student_factor, teacher_factor)
    return (factor(f_s) - factor(f_t)).abs().mean()


def paraphraser_reconstruction_loss(reconstruction: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(reconstruction, teacher_feat)


def _conv_block(c_in: int, c_out: int, bn: bool, transpose: bool = False) -> list[nn.Module]:
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(c_in, c_out, 3, 1, 1)
    return [conv] + ([nn.BatchNorm2d(c_out)] if bn else []) + [nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    def __init__(self, t_channels: int, rate: float = 0.5):
        super().__init__()
        mid = int(t_channels * rate)
        self.encoder = nn.Sequential(*_conv_block(t_channels, t_channels, False), *_conv_block(t_channels, mid, False),
                                     *_conv_block(mid, mid, False))
        self.decoder = nn.Sequential(*_conv_block(mid, mid, False, True), *_conv_block(mid, t_channels, False, True),
                                     *_conv_block(t_channels, t_channels, False, True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder(x)
        return f, self.decoder(f)


class Translator(nn.Module):
    def __init__(self, s_channels: int, t_channels: int, rate: float = 0.5):
        super().__init__()
        mid = int(t_channels * rate)
        self.encoder = nn.Sequential(*_conv_block(s_channels, s_channels, True), *_conv_block(s_channels, mid, True),
                                     *_conv_block(mid, mid, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class FT(Distiller):
    name = "ft"
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 200.0, "temperature": 4.0, "init_epochs": 30}

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        s_c = ctx.student_shapes["feats"][-1][0]
        t_c = ctx.teacher_shapes["feats"][-1][0]
        self.heads["paraphraser"] = Paraphraser(t_c)
        self.heads["translator"] = Translator(s_c, t_c)

    def _init_loss(self, images, targets):
        f_t = self.teacher_features(images).feats[-1]
        _, rec = self.heads["paraphraser"](f_t)
        with full_precision(images):
            return {"ft_init": paraphraser_reconstruction_loss(rec.float(), f_t.float())}

    def init_stage(self):
        epochs = int(self.hp["init_epochs"])
        if epochs <= 0:
            return None
        lr = 0.01 if self.ctx.student_arch in _SMALL_INIT_LR_STUDENTS else None
        return InitStage(epochs=epochs, parameters=list(self.heads["paraphraser"].parameters()),
                         loss=self._init_loss, lr=lr)

    def learnable_parameters(self):
        # the paraphraser is fixed after its init stage (RepDistiller leaves it out of the optimizer)
        return list(self.student.parameters()) + list(self.heads["translator"].parameters())

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        out = self.student.forward_features(images)
        t = self.teacher_features(images)
        terms = self.base_terms(out.logits, t.logits, targets)
        factor_s = self.heads["translator"](out.feats[-1])
        with torch.no_grad():
            factor_t = self.heads["paraphraser"].encoder(t.feats[-1])
        with full_precision(images):
            terms["ft"] = self.hp["beta"] * ft_loss(factor_s.float(), factor_t.float())
        return out.logits, terms
