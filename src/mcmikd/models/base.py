"""The interface every model of the zoo implements."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Features:
    """What feature-based distillers read from a network.

    `feats` are RepDistiller's `is_feat=True` maps without the pooled vector: `feats[0]` is the stem output,
    then one map per stage (VGG and ResNet50 have more stages), each taken after the stage's last ReLU.
    `preact_feats` are the same maps before that last ReLU (RepDistiller's `preact=True`; AB needs them).
    `pooled` is the penultimate embedding (RepDistiller's `feat[-1]`), `logits` the classifier output.
    """

    feats: list[torch.Tensor]
    preact_feats: list[torch.Tensor]
    pooled: torch.Tensor
    logits: torch.Tensor


class ClassifierNet(nn.Module):
    """Base class: `forward` returns logits only; `forward_features` returns a `Features` record.

    Subclasses set:
      * `stage_channels`: channels of each entry of `Features.feats`;
      * `embedding_dim`: size of `Features.pooled`;
      * `cam_layer`: dotted name of the module whose output (a 4-D tensor) Eigen-CAM reads by default
        (the last convolutional stage before global pooling).
    """

    stage_channels: list[int]
    embedding_dim: int
    cam_layer: str
    arch: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> Features:  # pragma: no cover - subclasses override
        raise NotImplementedError


def run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `stage` block by block and return its output and the pre-activation map of its last block.

    The last block must provide `forward_with_preact(x) -> (out, preact)`; `stage(x)` itself stays a plain
    tensor-to-tensor call so that forward hooks on stages and blocks see tensors. Hooks on the stage and on its
    last block therefore fire in `forward` (what Eigen-CAM runs), not here.
    """
    *head, last = stage
    for block in head:
        x = block(x)
    return last.forward_with_preact(x)
