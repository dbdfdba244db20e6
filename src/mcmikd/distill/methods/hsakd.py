"""Yang, An, Cai, Xu, "Hierarchical Self-supervised Augmented Knowledge Distillation" (IJCAI 2021, arXiv
2107.13715), after its official CIFAR-100 code (github.com/winycg/HSAKD: `train_teacher_cifar.py`,
`train_student_cifar.py`, `models/{resnet,wrn,vgg,mobilenetv2}.py`).

Self-supervised augmented task (paper §3, method): every image is seen under the 4 rotations 0/90/180/270°, and
an image of class y rotated by k·90° has the joint label y·4 + k among K·4 classes.

Auxiliary classifiers (paper §3; official `Auxiliary_Classifier` of each model file): one per stage output
`feats[1:]` of a network (RepDistiller's f1..f_L); the head on stage l repeats the network's deeper stages —
for every later stage j one stage of `aux_blocks` building blocks to stage j's channels, stride 2 where stage j's
map is smaller, stride 1 otherwise — and the head on the last stage gets one stride-1 stage at the last width, so
all heads end at about the depth of the network; then global average pooling and a linear layer to K·4 joint
classes.

Teacher (official `train_teacher_cifar.py --freezed`, `train_teacher_freezed.sh`): here the teacher
(MLL or MCMI) is given and its backbone stays frozen, so its auxiliary classifiers are trained first, as this
method's init stage: Σ_l CE(c_l^t(f_l^t(rot x)), joint label) on the frozen teacher's maps (eval-mode backbone,
no grad), heads in train mode. The official frozen-backbone run trains them 100 epochs (SGD lr 0.05, Nesterov,
wd 5e-4, ×0.1 at epochs 30/60/90, batch 64): `init_epochs` 100 and `init_lr` 0.05 are those values; the engine's
init stage keeps its learning rate constant, uses the student recipe's momentum and weight decay without Nesterov,
and keeps the last heads (official: the heads of the best test epoch) (deviations). The official code also trains
a teacher jointly with its heads from scratch over the whole 240-epoch schedule (`train_teacher_cifar.py` without
`--freezed`); that would change the teacher under comparison (MLL or MCMI), so it is not offered.

Student (paper §3; official `train_student_cifar.py`): the student and its own auxiliary classifiers are
trained together on the 4·b rotated batch (gradients reach the student backbone through its heads):
    ce     = γ · CE(student logits of the unrotated images, y)
    kd     = α · KL_T(teacher ‖ student) · T² over all 4·b rotated images (main heads, K classes)
    kd_aux = β · Σ_l KL_T(c_l^t ‖ c_l^s) · T² over all 4·b images (joint K·4 classes)
with γ = α = β = 1 and T = 3 (official `--kd_T 3`). Teacher and teacher heads run in eval mode without grad.
Inference uses the student's main head on unrotated images only; the auxiliary heads are dropped.

Choices where the official code cannot be followed for all 22 architectures (named hyper-parameters):
  * building block: RepDistiller's ResNet basic block for every family (official: each network's own blocks —
    ResNet basic blocks, WRN pre-activation blocks, VGG convs, MobileNetV2 inverted residuals, ...);
  * `aux_blocks: null` means the network's own blocks per stage for the CIFAR ResNets ((depth−2)/6, as the
    official ResNet heads) and WRNs ((depth−4)/6, as the official WRN heads), 1 for the other families;
  * networks with a different number of stages pair their deepest heads (official: the student's heads index the
    teacher's from the shallowest; all paper pairs have as many stages on both sides).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.distill.base import Distiller, InitStage
from mcmikd.distill.methods._common import full_precision
from mcmikd.errors import ConfigError
from mcmikd.models.base import init_weights
from mcmikd.models.resnet import BasicBlock

ROTATIONS = 4  # 0°, 90°, 180°, 270° (official `torch.rot90(input, k, (2, 3)) for k in range(4)`)


# --------------------------------------------------------------------------------------------- the augmented task
def rotate_batch(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of a (b, C, H, W) batch (H = W) and their joint labels y·4 + k, on the batch's device.

    Returns ((4·b, C, H, W) images, (4·b,) labels) laid out rotation-major: rows k·b … k·b + b − 1 hold the batch
    rotated by k·90° (counter-clockwise in the (H, W) plane, `torch.rot90(x, k, (2, 3))`), so rows 0 … b − 1 are
    the images themselves. Joint labels follow the official indexing y·4 + k.
    """
    x = torch.cat([torch.rot90(images, k, (2, 3)) for k in range(ROTATIONS)], dim=0)
    k = torch.arange(ROTATIONS, device=targets.device).unsqueeze(1)
    return x, (targets.unsqueeze(0) * ROTATIONS + k).reshape(-1)


def kl_t(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², mean over rows (official `DistillKL`, batchmean), nats."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean() * temperature**2


def hsakd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_aux: list[torch.Tensor],
               teacher_aux: list[torch.Tensor], targets: torch.Tensor, *, gamma: float = 1.0, alpha: float = 1.0,
               beta: float = 1.0, temperature: float = 3.0) -> dict[str, torch.Tensor]:
    """The student's named loss terms on a rotated batch (official `train_student_cifar.py`, `train`).

    `student_logits`, `teacher_logits`: (4·b, K) main-head logits of `rotate_batch` images (rows 0 … b − 1
    unrotated); `student_aux`, `teacher_aux`: paired lists of (4·b, 4·K) auxiliary logits; `targets`: (b,) labels.
    Returns {"ce": γ·CE(unrotated rows, y), "kd": α·KL_T over all rows, "kd_aux": β·Σ_l KL_T of the pairs}.
    """
    b = targets.shape[0]
    terms = {"ce": gamma * F.cross_entropy(student_logits[:b], targets),
             "kd": alpha * kl_t(student_logits, teacher_logits, temperature)}
    aux = sum(kl_t(s, t, temperature) for s, t in zip(student_aux, teacher_aux))
    terms["kd_aux"] = beta * aux
    return terms


def aux_ce_loss(aux_logits: list[torch.Tensor], joint_targets: torch.Tensor) -> torch.Tensor:
    """Σ_l CE(aux logits_l, joint labels): the teacher heads' self-supervised augmented task
    (official `train_teacher_cifar.py`, `train`; the main head's CE there has no gradient with a frozen backbone)."""
    return sum(F.cross_entropy(z, joint_targets) for z in aux_logits)


# --------------------------------------------------------------------------------------------- auxiliary heads
def official_aux_blocks(arch: str) -> int:
    """Blocks per stage of an auxiliary head when `aux_blocks` is null: the network's own blocks per stage for
    the CIFAR ResNets ((depth − 2)/6) and WRNs ((depth − 4)/6), as the official heads; 1 otherwise."""
    m = re.fullmatch(r"resnet(\d+)(x4)?", arch)
    if m:
        return max(1, (int(m.group(1)) - 2) // 6)
    m = re.fullmatch(r"wrn_(\d+)_\d+", arch)
    if m:
        return max(1, (int(m.group(1)) - 4) // 6)
    return 1


def aux_path(stage_shapes: list[tuple[int, int, int]], start: int) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of each stage of the head on `stage_shapes[start]`.

    One stage per later network stage (stride 2 where that stage's map is smaller, else 1); the last stage's
    head gets a single stride-1 stage at the last width (official ResNet/WRN `block_extractor3`).
    """
    path = []
    c, h = stage_shapes[start][0], stage_shapes[start][1]
    for c_next, h_next, _ in stage_shapes[start + 1:]:
        path.append((c, c_next, 2 if h_next < h else 1))
        c, h = c_next, h_next
    if start == len(stage_shapes) - 1:
        path.append((c, c, 1))
    return path


class AuxClassifier(nn.Module):
    """c_l: stages of RepDistiller basic blocks, global average pooling, linear layer to `num_outputs` logits.

    Input (n, C_l, H_l, W_l), the network's stage-l map; output (n, num_outputs).
    """

    def __init__(self, path: list[tuple[int, int, int]], blocks: int, num_outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in path:
            layers.append(BasicBlock(c_in, c_out, stride))
            layers.extend(BasicBlock(c_out, c_out) for _ in range(blocks - 1))
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(path[-1][1], num_outputs)
        init_weights(self, linear="zero_bias")  # official heads: kaiming-normal convs (fan out), zero linear bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(x).mean(dim=(2, 3)))  # the mean: a deterministic global average pool


def build_aux_heads(stage_shapes: list[tuple[int, int, int]], starts: list[int], blocks: int,
                    num_outputs: int) -> nn.ModuleList:
    """One AuxClassifier per index of `starts` into `stage_shapes` (the network's `feats[1:]` shapes)."""
    return nn.ModuleList(AuxClassifier(aux_path(stage_shapes, i), blocks, num_outputs) for i in starts)


# --------------------------------------------------------------------------------------------- the method
class HSAKD(Distiller):
    name = "hsakd"
    defaults = {"gamma": 1.0, "alpha": 1.0, "beta": 1.0, "temperature": 3.0, "init_epochs": 100,
                "init_lr": 0.05, "aux_blocks": None}

    @classmethod
    def check_compatible(cls, student_shapes, teacher_shapes, hp):
        blocks = {**cls.defaults, **(hp or {})}["aux_blocks"]
        if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1):
            raise ConfigError(f"hsakd: aux_blocks must be null or a positive integer, got {blocks!r}")
        for role, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            for _, h, w in (shapes or {}).get("feats", [])[1:]:
                if h != w:
                    raise ConfigError(f"hsakd rotates images by 90°, which needs square feature maps; the {role} "
                                      f"has a {h}×{w} map")

    @staticmethod
    def paired_stages(n_student: int, n_teacher: int) -> tuple[list[int], list[int]]:
        """Indices into the student's and the teacher's `feats[1:]` of the paired heads (the deepest ones)."""
        n = min(n_student, n_teacher)
        return list(range(n_student - n, n_student)), list(range(n_teacher - n, n_teacher))

    def __init__(self, student, teacher, hp, ctx):
        super().__init__(student, teacher, hp, ctx)
        self.check_compatible(ctx.student_shapes, ctx.teacher_shapes, self.hp)
        s_stages = [tuple(s) for s in ctx.student_shapes["feats"][1:]]
        t_stages = [tuple(s) for s in ctx.teacher_shapes["feats"][1:]]
        self.s_idx, self.t_idx = self.paired_stages(len(s_stages), len(t_stages))
        blocks = self.hp["aux_blocks"]
        s_blocks = int(blocks) if blocks is not None else official_aux_blocks(ctx.student_arch)
        t_blocks = int(blocks) if blocks is not None else official_aux_blocks(ctx.teacher_arch)
        joint = ctx.num_classes * ROTATIONS
        self.heads["student_aux"] = build_aux_heads(s_stages, self.s_idx, s_blocks, joint)
        self.heads["teacher_aux"] = build_aux_heads(t_stages, self.t_idx, t_blocks, joint)
        self.heads["teacher_aux"].eval()

    # the teacher's heads are trained only in the init stage; afterwards they are frozen like the teacher
    def train(self, mode: bool = True):
        super().train(mode)
        self.heads["teacher_aux"].eval()
        return self

    def learnable_parameters(self):
        return list(self.student.parameters()) + list(self.heads["student_aux"].parameters())

    def student_aux_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The student's paired auxiliary logits, each (n, 4·K), from its `Features.feats` (n images)."""
        return [head(feats[1 + i]) for head, i in zip(self.heads["student_aux"], self.s_idx)]

    def teacher_aux_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The teacher's paired auxiliary logits, each (n, 4·K), from its `Features.feats` (n images)."""
        return [head(feats[1 + i]) for head, i in zip(self.heads["teacher_aux"], self.t_idx)]

    def _init_loss(self, images, targets):
        x, joint = rotate_batch(images, targets)
        with torch.no_grad():
            feats = self.teacher.forward_features(x).feats
        self.heads["teacher_aux"].train(self.training)
        try:
            logits = self.teacher_aux_logits(feats)
        finally:
            self.heads["teacher_aux"].eval()
        with full_precision(images):
            return {"teacher_aux_ce": aux_ce_loss([z.float() for z in logits], joint)}

    def init_stage(self):
        epochs = int(self.hp["init_epochs"])
        if epochs <= 0:
            return None
        lr = self.hp["init_lr"]
        return InitStage(epochs=epochs, parameters=list(self.heads["teacher_aux"].parameters()),
                         loss=self._init_loss, lr=float(lr) if lr is not None else None)

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        b = images.shape[0]
        x, _ = rotate_batch(images, targets)
        out = self.student.forward_features(x)
        s_aux = self.student_aux_logits(out.feats)
        with torch.no_grad():
            t = self.teacher.forward_features(x)
            t_aux = self.teacher_aux_logits(t.feats)
        with full_precision(images):
            terms = hsakd_loss(out.logits.float(), t.logits.float(), [z.float() for z in s_aux],
                               [z.float() for z in t_aux], targets, gamma=self.hp["gamma"], alpha=self.hp["alpha"],
                               beta=self.hp["beta"], temperature=self.hp["temperature"])
        return out.logits[:b], terms
