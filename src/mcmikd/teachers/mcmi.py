"""MCMI teacher (Ye et al., ICLR 2024, §3 and the official fine-tuning script): the MLL teacher fine-tuned with

    CE − λ · mean_i KL(P_{x_i} ‖ Q_{y_i}),   λ > 0,

with class centroids Q_y computed once from the MLL teacher before fine-tuning and then frozen (or, as options,
tracked by an EMA of the batches, or recomputed at the start of every epoch). Maximising the KL term maximises the
teacher's conditional mutual information I(X; Ŷ | Y) (in nats; `mcmikd.cmi`).
"""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.teachers.base import TeacherObjective, fmt_num

CENTROIDS = ("eval", "train_augmented", "ema", "per_epoch")
OFFICIAL_BATCH = 64  # batch size of the official centroid pass (train mode, augmented images)


def mcmi_loss(logits, labels, centroids, lam: float) -> dict:
    """The MCMI training loss as named terms: {'ce': CE, 'neg_cmi': −λ·mean KL(P_x ‖ Q_y)} (their sum is the loss).

    logits (N, C), labels (N,) int64, centroids (C, C) rows on the simplex (not differentiated), λ ≥ 0.
    Raises ValueError for λ < 0 (adding +λ·KL would *minimise* the CMI, a known third-party mistake).
    """
    import torch.nn.functional as F

    from mcmikd.cmi import kl_to_centroids

    if lam < 0:
        raise ValueError(f"lam must be >= 0 (got {lam}); MCMI maximises CMI, so the KL term is subtracted")
    probs = F.softmax(logits.float(), dim=1)
    kl = kl_to_centroids(probs, labels, centroids.detach()).mean()
    return {"ce": F.cross_entropy(logits, labels), "neg_cmi": -lam * kl}


def initial_centroids(model, stream, runtime, num_classes: int, mode: str, generator):
    """Q_y (C, C) from one pass of the MLL teacher over the training set, before fine-tuning.

    * `eval` (our default): eval mode, no augmentation, no gradients; nothing about the model changes.
    * `train_augmented` (the official code): train mode on augmented batches of 64 (`OFFICIAL_BATCH`), which
      also updates the BatchNorm running statistics of the teacher that is then fine-tuned.
    * `ema`: starts from the `eval` centroids; the loss then tracks an EMA of the batches.
    * `per_epoch`: starts from the `eval` centroids, recomputed the same way at the start of every epoch
      (`MCMI.before_epoch`), so the loss cannot grow by moving a class's mean away from stale centroids (docs/paper.md,
      "What fine-tuning with frozen centroids does").
    """
    import torch
    import torch.nn.functional as F

    from mcmikd.cmi import class_centroids
    from mcmikd.engine import predict

    with torch.no_grad():
        if mode == "train_augmented":
            model.train()
            sums = torch.zeros(num_classes, num_classes, device=runtime.device)
            counts = torch.zeros(num_classes, device=runtime.device)
            for images, labels, _ in stream.batches(generator, OFFICIAL_BATCH):
                with runtime.autocast():
                    probs = F.softmax(model(images).float(), dim=1)
                sums.index_add_(0, labels, probs)
                counts += torch.bincount(labels, minlength=num_classes)
            return sums / counts.clamp_min(1).unsqueeze(1)
        if hasattr(stream, "clean_logits"):  # a streamed dataset (mcmikd.streaming)
            probs = F.softmax(stream.clean_logits(model, runtime), dim=1)
            return class_centroids(probs, stream.labels, num_classes)
        images = stream.images[stream.pool]
        labels = stream.labels[stream.pool]
        probs = F.softmax(predict(model, images, stream.normalize, runtime), dim=1)
        return class_centroids(probs, labels, num_classes)


class MCMI(TeacherObjective):
    name = "mcmi"
    label = "MCMI"
    color = "#DE8F05"
    start_from = "mll"
    control = "ce_finetune"
    must_raise_cmi_over = ("start", "control")
    multiprocess = True  # but not with `ema` centroids (multiprocess_problem)
    defaults = {"lambda": 0.25, "lambda_per_teacher": {}, "centroids": "eval", "ema_decay": 0.9999}
    path_keys = ("lambda", "centroids")  # the folder: mcmi-<λ>, with -<centroids> unless the default (eval)

    @classmethod
    def check_hp(cls, hp: dict, where: str) -> None:
        super().check_hp(hp, where)
        lams = {"lambda": hp.get("lambda", cls.defaults["lambda"]),
                **{f"lambda_per_teacher.{k}": v for k, v in (hp.get("lambda_per_teacher") or {}).items()}}
        for key, lam in lams.items():
            if not isinstance(lam, (int, float)) or isinstance(lam, bool) or lam <= 0:
                raise ConfigError(f"config key '{where}.{key}': {lam!r} is not a positive number; MCMI "
                                  f"minimises CE − λ·KL, so λ must be > 0")
        if hp.get("centroids", "eval") not in CENTROIDS:
            raise ConfigError(f"config key '{where}.centroids': {hp['centroids']!r} is not allowed; "
                              f"use one of {list(CENTROIDS)}")
        decay = hp.get("ema_decay", cls.defaults["ema_decay"])
        if not 0 < decay < 1:
            raise ConfigError(f"config key '{where}.ema_decay': {decay!r} must lie in (0, 1)")

    @classmethod
    def resolve_hp(cls, hp: dict, arch: str) -> dict:
        hp = {**cls.defaults, **hp}
        hp["lambda"] = float(hp.pop("lambda_per_teacher").get(arch, hp["lambda"]))
        if hp["centroids"] != "ema":
            hp.pop("ema_decay")
        return hp

    @classmethod
    def variant(cls, hp: dict) -> str:
        """'mcmi-<λ>' for the default frozen (eval) centroids, as before; 'mcmi-<λ>-<centroids>' otherwise."""
        name = f"{cls.name}-{fmt_num(hp['lambda'])}"
        centroids = hp.get("centroids", cls.defaults["centroids"])
        return name if centroids == cls.defaults["centroids"] else f"{name}-{centroids}"

    @classmethod
    def describe(cls, hp: dict) -> str:
        centroids = hp.get("centroids", cls.defaults["centroids"])
        return f"{cls.label} (λ={fmt_num(hp['lambda'])}" + ("" if centroids == "eval" else f", {centroids}") + ")"

    @classmethod
    def multiprocess_problem(cls, hp: dict) -> str | None:
        """`ema` centroids follow every batch (`after_step`): several processes would each follow their own slice of
        it, so they are refused; `eval`, `train_augmented` and `per_epoch` centroids are computed alike on every
        process from the whole training set."""
        if hp.get("centroids") == "ema":
            return "its 'ema' centroids follow each batch (state across batches); use centroids: per_epoch or eval"
        return None

    @classmethod
    def collapse_advice(cls, hp: dict) -> str:
        return f"lower λ ({fmt_num(hp['lambda'])})"

    @staticmethod
    def loss(logits, labels, centroids=None, lam: float = 0.25) -> dict:
        return mcmi_loss(logits, labels, centroids, lam)

    def loss_hp(self) -> dict:
        return {"lam": float(self.hp["lambda"])}

    def prepare(self, model, stream, runtime, num_classes: int, seed: int) -> dict:
        from mcmikd.engine import make_generator

        generator = make_generator(seed + 7919, runtime.device)  # separate from the training stream
        return {"centroids": initial_centroids(model, stream, runtime, num_classes, self.hp["centroids"], generator)}

    def before_epoch(self, module, epoch: int) -> None:
        """`per_epoch` centroids: Q_y (C, C) recomputed from the current teacher (eval mode, clean training images,
        no gradients, no random numbers; the train/eval mode is put back) before each epoch's training pass."""
        if self.hp["centroids"] == "per_epoch":
            from mcmikd.cmi import class_centroids
            from mcmikd.teachers.base import clean_train_probs

            probs, labels = clean_train_probs(module.student, self.stream, self.runtime)
            module.centroids.copy_(class_centroids(probs, labels, module.centroids.shape[0]))

    def reference_centroids(self, module):
        return module.centroids

    def after_step(self, module, logits, labels) -> None:
        if self.hp["centroids"] == "ema":
            import torch
            import torch.nn.functional as F

            from mcmikd.cmi import batch_class_means

            with torch.no_grad():  # inside the training step (captured on CUDA): no host sync
                centroids = module.centroids
                batch = batch_class_means(F.softmax(logits.detach().float(), dim=1), labels, centroids.shape[0])
                present = ~torch.isnan(batch[:, :1])  # classes in the batch; the others keep their centroid
                decay = self.hp["ema_decay"]
                centroids.copy_(torch.where(present, decay * centroids + (1 - decay) * batch, centroids))

    def extra_metrics(self, state: dict) -> dict:
        return {"initial_centroids": state["centroids"].cpu().tolist()}
