"""The torch module the training engine runs for a teacher objective (`mcmikd.engine.fit`'s interface)."""

from __future__ import annotations

import torch
from torch import nn


class ObjectiveModule(nn.Module):
    """`model` trained with `objective.loss`; `state` tensors (e.g. centroids) are buffers, so they are saved in
    every resume checkpoint and moved with the module."""

    def __init__(self, model: nn.Module, objective, state: dict[str, torch.Tensor]):
        super().__init__()
        self.student = model  # the engine's name for the network being trained
        self.objective = objective
        self._state_names = list(state)
        for name, tensor in state.items():
            self.register_buffer(name, tensor.clone())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._state_names}

    def learnable_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    def forward_train(self, images, targets, *, epoch, indices=None, generator=None):
        logits = self.student(images)
        terms = self.objective.loss(logits, targets, **self.objective.loss_hp(), **self.state_tensors())
        self.objective.after_step(self, logits, targets)
        return logits, terms

    def before_epoch(self, epoch: int) -> None:
        """`engine.fit` calls this before each main-phase epoch (the objective's `before_epoch`)."""
        self.objective.before_epoch(self, epoch)

    def epoch_diagnostics(self) -> dict:
        """`engine.fit` merges this into each epoch's record (the objective's `epoch_diagnostics`)."""
        return self.objective.epoch_diagnostics(self)

    def checkpoint_state(self) -> dict:
        return self.state_dict()

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state)
