"""The interface every model of the zoo implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
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


def init_weights(model: nn.Module, *, linear: Literal["keep", "zero_bias", "normal"]) -> None:
    """RepDistiller's weight initialisation, in place, visiting `model.modules()` in order.

    Every `nn.Conv2d` gets `kaiming_normal_(mode="fan_out", nonlinearity="relu")` and a zero bias where it has one
    (only VGG's convs have biases); every `nn.BatchNorm2d` gets weight 1 and bias 0. `linear` picks what the
    RepDistiller file of the architecture does to `nn.Linear` layers:

      * "keep": nothing, PyTorch's default init stays (RepDistiller's resnet.py and resnetv2.py);
      * "zero_bias": PyTorch's default weight, zero bias (RepDistiller's wrn.py);
      * "normal": weight ~ N(0, 0.01), zero bias (RepDistiller's vgg.py and mobilenetv2.py; the latter writes the
        conv init by hand as N(0, sqrt(2 / (k*k*out_channels))), which is the same distribution).

    RepDistiller's ShuffleNets have no initialisation loop, so ours do not call this. Random draws happen in module
    order (conv weights, and linear weights for "normal"), so a model's initialisation depends only on its module
    tree and the RNG state.
    """
    if linear not in ("keep", "zero_bias", "normal"):
        raise ValueError(f"linear must be 'keep', 'zero_bias' or 'normal', got {linear!r}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "keep":
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*c, H, W] -> [N, c*g, H, W]: interleave the channels of the `groups` groups (ShuffleNet V1 and V2)."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ThreeStageNet(ClassifierNet):
    """The run ShuffleNet V1 and V2 share: stem `relu(bn1(conv1(x)))`, stages `layer1`..`layer3` (their last
    blocks provide `forward_with_preact`), then `_head(x) -> (pooled, logits)`, which subclasses define."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self._head(self.layer3(self.layer2(self.layer1(x))))[1]

    def forward_features(self, x: torch.Tensor) -> Features:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        pooled, logits = self._head(f3)
        return Features([f0, f1, f2, f3], [f0, p1, p2, p3], pooled, logits)


# --------------------------------------------------------------------------------------------- pooling
def _pool_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """(size_out, size_in) averaging weights of adaptive pooling: row i averages inputs ⌊i·in/out⌋ .. ⌈(i+1)·in/out⌉−1
    (PyTorch's adaptive-pooling bins)."""
    rows = torch.zeros(size_out, size_in, dtype=like.dtype, device=like.device)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def adaptive_avg_pool(x: torch.Tensor, size) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, size)` for (N, C, H, W) maps, with a backward pass that is deterministic on CUDA.

    PyTorch's CUDA kernel for the adaptive average pooling backward has no deterministic version (with
    `torch.use_deterministic_algorithms(True)` it raises). When deterministic algorithms are on and `x` lives on
    a GPU, the same averages are computed as two small matrix products (bins as PyTorch defines them), whose
    backward is deterministic; everywhere else — the CPU, or CUDA without the setting — PyTorch's own kernel runs,
    so CPU results stay bit for bit what they were."""
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if not (x.is_cuda and torch.are_deterministic_algorithms_enabled()):
        return F.adaptive_avg_pool2d(x, (out_h, out_w))
    return deterministic_avg_pool(x, out_h, out_w)


def deterministic_avg_pool(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling whose CUDA backward is deterministic: global pooling (1 × 1) as one `mean` (a
    reduction, deterministic on CUDA; its backward an expand), one kernel where the matrix form takes several;
    other sizes as `matrix_avg_pool`."""
    if (out_h, out_w) == (1, 1):
        return x.mean(dim=(2, 3), keepdim=True)
    return matrix_avg_pool(x, out_h, out_w)


def matrix_avg_pool(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling of (N, C, H, W) to (N, C, out_h, out_w) as rows · x · colsᵀ (deterministic backward
    on every device)."""
    rows = _pool_matrix(x.shape[-2], out_h, x)
    cols = _pool_matrix(x.shape[-1], out_w, x)
    return torch.einsum("oh,nchw,pw->ncop", rows, x, cols)


class GlobalAvgPool(nn.Module):
    """Global average pooling (N, C, H, W) → (N, C, 1, 1) with a deterministic CUDA backward (`adaptive_avg_pool`);
    a drop-in for `nn.AdaptiveAvgPool2d(1)` (no parameters, so model files are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool(x, 1)
