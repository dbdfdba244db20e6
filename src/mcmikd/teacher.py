"""MCMI fine-tuning of an MLL teacher: frozen class centroids from one pass, then CE − λ·KL(P_x ‖ Q_y)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.cmi import class_centroids, kl_to_centroids
from mcmikd.engine import Runtime, TrainStream, predict


@torch.no_grad()
def initial_centroids(model: nn.Module, stream: TrainStream, runtime: Runtime, num_classes: int, mode: str,
                      generator: torch.Generator) -> torch.Tensor:
    """Q_y from one pass of the MLL teacher over the training set.

    * `eval` (our default): eval mode, no augmentation, no gradients; nothing about the model changes.
    * `train_augmented` (the official code): train mode on augmented batches, which also updates the
      BatchNorm running statistics of the teacher that is then fine-tuned.
    """
    if mode == "train_augmented":
        model.train()
        sums = torch.zeros(num_classes, num_classes, device=runtime.device)
        counts = torch.zeros(num_classes, device=runtime.device)
        for images, labels, _ in stream.batches(generator, 256):
            with runtime.autocast():
                probs = F.softmax(model(images).float(), dim=1)
            sums.index_add_(0, labels, probs)
            counts += torch.bincount(labels, minlength=num_classes)
        return sums / counts.clamp_min(1).unsqueeze(1)
    images = stream.images[stream.pool]
    labels = stream.labels[stream.pool]
    probs = F.softmax(predict(model, images, stream.normalize, runtime), dim=1)
    return class_centroids(probs, labels, num_classes)


class McmiObjective(nn.Module):
    """CE − λ·mean KL(P_x ‖ Q_y) on a teacher, with centroids frozen (or, optionally, an EMA of the batches)."""

    def __init__(self, model: nn.Module, centroids: torch.Tensor, lam: float, ema_decay: float | None = None):
        super().__init__()
        if lam < 0:
            raise ValueError("λ must be positive: MCMI subtracts λ·KL to maximise CMI")
        self.student = model  # the network being trained (the engine's name for it)
        self.register_buffer("centroids", centroids.clone())
        self.lam = float(lam)
        self.ema_decay = ema_decay

    def learnable_parameters(self):
        return list(self.student.parameters())

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        probs = F.softmax(logits.float(), dim=1)
        kl = kl_to_centroids(probs, targets, self.centroids).mean()
        if self.ema_decay is not None:
            self._update_ema(probs.detach(), targets)
        return logits, {"ce": F.cross_entropy(logits, targets), "neg_cmi": -self.lam * kl}

    @torch.no_grad()
    def _update_ema(self, probs, targets):
        batch = class_centroids(probs, targets, self.centroids.shape[0])
        present = ~torch.isnan(batch[:, 0])
        self.centroids[present] = self.ema_decay * self.centroids[present] + (1 - self.ema_decay) * batch[present]

    def checkpoint_state(self):
        return self.state_dict()

    def load_checkpoint_state(self, state):
        self.load_state_dict(state)
