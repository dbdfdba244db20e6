"""The Distiller interface: student + frozen teacher + the method's own learnable heads.

A training step calls `forward_train(images, targets, epoch=, indices=, generator=)` and gets the student's
logits and a dict of named, already weighted loss terms; the engine sums them. The student loss of every
framework is γ·CE + α·KL_T(teacher ‖ student)·T² + β·L_method (RepDistiller's convention), so each method's
defaults keep the meaning of the published weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.errors import ConfigError


@dataclass
class DistillContext:
    """Facts about the data and the two networks a method may need to build its heads."""

    num_classes: int
    num_train: int  # number of distinct training images the student can see (memory-bank size for CRD)
    train_labels: torch.Tensor | None  # labels of those images, in the positions passed as `indices`
    in_channels: int
    image_size: int
    epochs: int  # length of the main training phase
    student_shapes: dict = field(default_factory=dict)  # mcmikd.models.feature_shapes(...) of the student
    teacher_shapes: dict = field(default_factory=dict)
    student_arch: str = ""
    teacher_arch: str = ""
    # the whole training set the student's setting allows (every image not of an omitted class), for a method
    # whose memory bank spans it (CRD's bank: full, the official few-shot code): their labels, in training-set
    # order, and the slot in that set of each visible position passed as `indices` (None: not given)
    full_train_labels: torch.Tensor | None = None
    full_train_slots: torch.Tensor | None = None


@dataclass
class InitStage:
    """A connector pre-training stage run before distillation (AB, FT, FSP in RepDistiller)."""

    epochs: int
    parameters: list[nn.Parameter]
    loss: Callable[..., dict[str, torch.Tensor]]  # loss(images, targets) -> named losses
    lr: float | None = None  # None: the student recipe's learning rate


class Distiller(nn.Module):
    """Base class. Subclasses set `name`, `defaults`, and override `forward_train` (and maybe more)."""

    name: ClassVar[str] = ""
    uses_teacher: ClassVar[bool] = True
    # hyper-parameters with RepDistiller's defaults; a config block may override any of them, and only them
    defaults: ClassVar[dict[str, Any]] = {"gamma": 1.0, "alpha": 0.0, "beta": 0.0, "temperature": 4.0}
    # the key of `defaults` that weights the method's own term (what the method-weight selection scales;
    # `mcmikd.distill.weights` reads it, and `weight_table`, from the source: keep them literals)
    weight_key: ClassVar[str | None] = "beta"
    # for a weight whose default is None (the official value per pair): (module-level {(teacher, student): value}
    # dict, module-level fallback value), both by name
    weight_table: ClassVar[tuple[str, str] | None] = None
    # trainable as N > 1 processes (`runtime.processes`, mcmikd.distributed): every loss term is a mean over the
    # batch's images of a per-image loss, and no state is kept across batches (no memory bank, no init stage, no
    # `step_inputs`). Read from the class's own source at parse time (`mcmikd.canonical.static_attribute`), so a
    # method says `multiprocess = True` in its own body; anything else is refused with runtime.processes > 1
    multiprocess: ClassVar[bool] = False

    # the range each numeric hyper-parameter may take, by name: (low, high, low excluded); None = unbounded. Applied
    # to the keys of `defaults` before any job (`check_hp`); a plug-in method adds its own keys to a copy.
    # Temperatures stop at 100: beyond it float32 softmax(logits / T) no longer resolves the logits.
    hp_ranges: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        **{w: (0, None, False) for w in ("gamma", "alpha", "beta", "w_dist", "w_angle", "inter_weight",
                                          "intra_weight")},
        "temperature": (0, 100, True), "nce_t": (0, 100, True), "nce_momentum": (0, 1, False),
        "init_lr": (0, 10, True), "init_epochs": (0, 10_000, False), "warmup": (0, 10_000, False),
        "feat_dim": (1, 65_536, False), "nce_k": (1, 10_000_000, False), "hint_layer": (0, 16, False),
        "p": (1, 16, False),
    }

    @classmethod
    def check_hp(cls, hp: dict, where: str) -> None:
        """Raise a one-line ConfigError for a key not in `defaults`, a value of another type than its default's
        (a number where the default is a number, a whole number where it is an integer, true/false where it is a
        boolean) or a number outside `hp_ranges`. `where` is the config key holding `hp` (e.g. methods.kd)."""
        unknown = sorted(set(hp) - set(cls.defaults))
        if unknown:
            raise ConfigError(f"config key '{where}': unknown key(s) {unknown} for method '{cls.name}'; "
                              f"known: {sorted(cls.defaults)}")
        for key, value in hp.items():
            default, at = cls.defaults[key], f"{where}.{key}"
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"config key '{at}': {value!r} is not true/false; write true or false")
                continue
            if isinstance(default, (int, float)) or (default is None and value is not None and key in cls.hp_ranges):
                if not number:
                    raise ConfigError(f"config key '{at}': {value!r} is not a number; write a number, e.g. {default!r}")
                if isinstance(default, int) and value != int(value):
                    raise ConfigError(f"config key '{at}': {value!r} is not a whole number; write e.g. {default!r}")
            if number and key in cls.hp_ranges:
                low, high, open_low = cls.hp_ranges[key]
                if ((low is not None and (value <= low if open_low else value < low))
                        or (high is not None and value > high)):
                    text = f"{'(' if open_low else '['}{low if low is not None else '-inf'}, " \
                           f"{high if high is not None else 'inf'}{']' if high is not None else ')'}"
                    raise ConfigError(f"config key '{at}': {value!r} is out of range; use a value in {text}")

    def __init__(self, student: nn.Module, teacher: nn.Module | None, hp: dict, ctx: DistillContext):
        super().__init__()
        self.check_hp(hp, f"methods.{self.name}")  # the pre-flight's check, also for a distiller built directly
        self.hp = {**self.defaults, **hp}
        self.ctx = ctx
        self.student = student
        if self.uses_teacher and teacher is None:
            raise ConfigError(f"method '{self.name}' needs a teacher")
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.heads = nn.ModuleDict()  # the method's own learnable modules (projectors, connectors, ...)

    # --- set-up checks --------------------------------------------------------------------------------
    @classmethod
    def check_compatible(cls, student_shapes: dict, teacher_shapes: dict, hp: dict) -> None:
        """Raise ConfigError if this method cannot pair these feature shapes (called before any training)."""

    # --- training ---------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics of the teacher stay frozen
        return self

    def learnable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: the student and the heads, never the teacher."""
        return list(self.student.parameters()) + list(self.heads.parameters())

    def extra_parameter_count(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())

    def init_stage(self) -> InitStage | None:
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    def forward_train(self, images: torch.Tensor, targets: torch.Tensor, *, epoch: int,
                      indices: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """(student logits (B, C), {term: weighted 0-dim loss}) of one batch. It must not sync with the host
        (no `.item()`, boolean-mask indexing or data-dependent shapes) and must update device state in place:
        the engine may capture it into a CUDA graph (`mcmikd.step`). The engine passes `generator=None`;
        random numbers come from `step_inputs`; Python values taken from `epoch` must be in `step_key`."""
        raise NotImplementedError

    def step_inputs(self, targets: torch.Tensor, indices: torch.Tensor,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Tensors drawn from the training `generator` for one step, before it (passed to `forward_train` as
        keyword arguments); default: none."""
        return {}

    def step_key(self, epoch: int):
        """The Python values `forward_train` derives from `epoch` (e.g. a warm-up weight), hashable: a captured
        step is reused only while this stays equal. Default None: forward_train does not use `epoch`."""
        return None

    # --- helpers shared by the methods --------------------------------------------------------------------
    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor):
        return self.teacher.forward_features(images)

    def ce_term(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.hp["gamma"] * F.cross_entropy(logits, targets)

    def base_terms(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                   targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """γ·CE plus, where α > 0, α·KL_T — the part every RepDistiller method shares."""
        from mcmikd.distill.methods.kd import kd_loss

        terms = {"ce": self.ce_term(student_logits, targets)}
        if self.hp["alpha"] and teacher_logits is not None:
            terms["kd"] = self.hp["alpha"] * kd_loss(student_logits, teacher_logits, self.hp["temperature"])
        return terms

    # --- checkpoints: the student and heads (and buffers such as CRD's memory), not the frozen teacher ----
    def checkpoint_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_checkpoint_state(self, state: dict) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match {self.name}: missing {missing}, unexpected {unexpected}")
