"""What a teacher objective declares, and the module the training engine runs for it.

An objective is a class (no torch at import time) with:
  * `name`, `label` (tables, figures) and `color` (figures);
  * `start_from`: None (trained from scratch with `teachers.training`) or the name of the objective whose model
    it fine-tunes (with `teachers.finetuning`; its collapse check compares it to that model);
  * `defaults`: its hyper-parameters (config: `teachers.hp.<name>`, per experiment `experiments.<x>.hp.<name>`);
    `path_keys`: those that name its result folder (`variant`), the only ones an experiment may override;
  * `loss(logits, labels, **state) -> {term: tensor}`: one pure function, the one the tests check and the one
    training runs (the engine sums the terms; their names are logged every epoch);
  * `prepare(...)`: the state the loss needs (e.g. MCMI's frozen centroids), computed once before training;
  * `epoch_check(record)`: an optional stop reason after an epoch (e.g. a diverged loss);
  * `stop_epoch()`: a planned stop after that epoch (an early-stopped teacher, not a collapse), or None;
  * `control`: the objective that is its control (same start, recipe and seed, without its own term; e.g. MCMI's
    λ = 0 fine-tuning `ce_finetune`), or None; tables give the gain over it beside the gain over the reference;
  * `must_raise_cmi_over`: whose training CMI (T = 1) its teacher must exceed ("start": the objective it fine-tunes,
    "control": its control); a teacher that does not is marked "CMI not raised" in the tables;
  * `before_epoch(module, epoch)` / `epoch_diagnostics(module)`: called by the engine around each fine-tuning
    epoch (e.g. MCMI's per-epoch centroids; the teacher's true CMI beside its loss's frozen-centroid KL).
"""

from __future__ import annotations

from typing import Any, ClassVar

from mcmikd.errors import ConfigError


def fmt_num(value: float) -> str:
    """Canonical short text for a number in a path (0.25 -> '0.25', 4.0 -> '4')."""
    return f"{float(value):g}"


class TeacherObjective:
    """Base class of the teacher objectives (see the module docstring)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    color: ClassVar[str] = "#555555"
    start_from: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}
    path_keys: ClassVar[tuple[str, ...]] = ()
    control: ClassVar[str | None] = None
    must_raise_cmi_over: ClassVar[tuple[str, ...]] = ()
    # trainable as N > 1 processes (`runtime.processes`, mcmikd.distributed): the loss is a batch mean of per-image
    # terms and `after_step` keeps no state across batches; `multiprocess_problem` may refuse some hyper-parameters
    multiprocess: ClassVar[bool] = False

    # ------------------------------------------------------------------ config (parse time, no torch)
    @classmethod
    def check_hp(cls, hp: dict, where: str) -> None:
        """Raise a one-line ConfigError for keys the objective does not know (override to check values)."""
        unknown = sorted(set(hp) - set(cls.defaults))
        if unknown:
            raise ConfigError(f"config key '{where}': unknown key(s) {unknown} for teacher objective "
                              f"'{cls.name}'; known: {sorted(cls.defaults)}")

    @classmethod
    def resolve_hp(cls, hp: dict, arch: str) -> dict:
        """The hyper-parameters one teacher of architecture `arch` is trained with (defaults filled in)."""
        return {**cls.defaults, **hp}

    @classmethod
    def variant(cls, hp: dict) -> str:
        """Result-folder name: the objective's name, then '-<value>' for each of `path_keys`."""
        return "-".join([cls.name, *(fmt_num(hp[k]) for k in cls.path_keys)])

    @classmethod
    def describe(cls, hp: dict) -> str:
        """Label with the values of `path_keys`, e.g. 'MCMI (λ=0.25)'."""
        return cls.label

    @classmethod
    def multiprocess_problem(cls, hp: dict) -> str | None:
        """Why a teacher with these (resolved) hyper-parameters cannot train as several processes, or None."""
        if cls.multiprocess:
            return None
        return "it is not marked as correct under several processes (TeacherObjective.multiprocess)"

    @classmethod
    def collapse_advice(cls, hp: dict) -> str:
        """What to change when the fine-tuned teacher collapsed."""
        return "use a gentler fine-tuning recipe (teachers.finetuning)"

    # ------------------------------------------------------------------ training (torch, in the job)
    def __init__(self, hp: dict):
        self.hp = dict(hp)
        self.stream = self.runtime = None
        self.num_classes = 0

    def bind(self, stream, runtime, num_classes: int) -> None:
        """The training stream, runtime and class count the epoch hooks measure with (set by the teacher job)."""
        self.stream, self.runtime, self.num_classes = stream, runtime, num_classes

    @staticmethod
    def loss(logits, labels, **state) -> dict:
        raise NotImplementedError

    def loss_hp(self) -> dict:
        """Keyword arguments `loss` takes from the hyper-parameters (e.g. {'lam': λ})."""
        return {}

    def prepare(self, model, stream, runtime, num_classes: int, seed: int) -> dict:
        """Tensors the loss needs besides logits and labels (kept as buffers: checkpointed, resumed)."""
        return {}

    def after_step(self, module, logits, labels) -> None:
        """Called after every loss evaluation (e.g. an EMA update of a buffer); default: nothing."""

    def epoch_check(self, record: dict) -> str | None:
        """A reason to stop after an epoch (None: go on)."""
        return None

    def stop_epoch(self) -> int | None:
        """A planned stop after this epoch, the recipe otherwise unchanged (MLL's `stop_epoch`); None: none."""
        return None

    def before_epoch(self, module, epoch: int) -> None:
        """Called before each fine-tuning epoch's training pass; default: nothing."""

    def reference_centroids(self, module):
        """The centroids Q⁰ (C, C) its loss compares each prediction with (MCMI: its frozen ones), or None."""
        return None

    def epoch_diagnostics(self, module) -> dict:
        """After each epoch of a fine-tuned teacher (`start_from` set, `bind` called): {'teacher': {'cmi',
        'frozen_kl', 'drift'}} in nats, measured on the clean training images in eval mode at T = 1 with fresh
        centroids (`mcmikd.cmi.cmi_decomposition`; frozen_kl and drift are None without `reference_centroids`).
        No random numbers are drawn and the model's train/eval mode is put back. A teacher trained from scratch: {}.
        """
        if self.start_from is None or self.stream is None:
            return {}

        from mcmikd.cmi import cmi_decomposition, conditional_mutual_information

        probs, labels = clean_train_probs(module.student, self.stream, self.runtime)
        centroids = self.reference_centroids(module)
        if centroids is None:
            cmi = float(conditional_mutual_information(probs, labels, self.num_classes))
            return {"teacher": {"cmi": cmi, "frozen_kl": None, "drift": None}}
        return {"teacher": cmi_decomposition(probs, labels, centroids)}

    def extra_metrics(self, state: dict) -> dict:
        """What the teacher's metrics.json records besides the common fields."""
        return {}

    def build(self, model, state: dict):
        """The module the engine trains: `model` under this objective's loss."""
        from mcmikd.teachers.module import ObjectiveModule

        return ObjectiveModule(model, self, state)


def clean_train_probs(model, stream, runtime):
    """(P (N, C) float32, labels (N,)) of `model` in eval mode, T = 1, on the stream's visible training images
    without augmentation; no gradients, no random numbers, and the model's train/eval mode is put back."""
    import torch
    import torch.nn.functional as F

    from mcmikd.engine import predict

    if hasattr(stream, "clean_logits"):  # a streamed dataset (mcmikd.streaming): decoded in DataLoader workers
        return F.softmax(stream.clean_logits(model, runtime), dim=1), stream.labels
    idx = stream.pool.to(stream.device)
    if stream.omitted:
        idx = idx[~torch.isin(stream.labels[idx], stream.omitted_dev)]
    was_training = model.training
    try:
        probs = F.softmax(predict(model, stream.images[idx], stream.normalize, runtime), dim=1)
    finally:
        model.train(was_training)
    return probs, stream.labels[idx]
