"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016) WRN-d-k for CIFAR, as used by RepDistiller.

Pre-activation blocks (BN-ReLU-conv), so a stage output has no ReLU of its own: RepDistiller's `preact` maps
are the stage outputs after the BatchNorm that the next stage (or the head) applies before its ReLU.
Module names follow RepDistiller so that its checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, adaptive_avg_pool, init_weights


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, padding=1, bias=False)
        # RepDistiller's (camelCase) name, kept so that its checkpoints load.
        self.convShortcut = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward_with_normed_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block output and `bn1(x)`, the block's view of `x` before its first ReLU."""
        normed = self.bn1(x)
        act = self.relu1(normed)
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # A projection shortcut reads the activated input; an identity shortcut the raw one.
        return out + (x if self.convShortcut is None else self.convShortcut(act)), normed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_normed_input(x)[0]


class WideStage(nn.Module):
    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            WideBlock(in_planes, out_planes, stride), *(WideBlock(out_planes, out_planes, 1) for _ in range(blocks - 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def forward_with_normed_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, *rest = self.layer
        x, normed = first.forward_with_normed_input(x)
        for block in rest:
            x = block(x)
        return x, normed


class WideResNet(ClassifierNet):
    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1)
        self.block2 = WideStage(n, widths[1], widths[2], 2)
        self.block3 = WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)

        self.stage_channels = widths
        self.embedding_dim = widths[3]
        self.cam_layer = "relu"  # the activated last stage; block3's output is still pre-BN

        init_weights(self, linear="zero_bias")

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(adaptive_avg_pool(x, 1), 1)
        return pooled, self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self._head(self.relu(self.bn1(x)))[1]

    def forward_features(self, x: torch.Tensor) -> Features:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, p1 = self.block2.forward_with_normed_input(f1)
        f3, p2 = self.block3.forward_with_normed_input(f2)
        p3 = self.bn1(f3)
        pooled, logits = self._head(self.relu(p3))
        return Features([f0, f1, f2, f3], [f0, p1, p2, p3], pooled, logits)


def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 1, num_classes, in_channels)


def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(16, 2, num_classes, in_channels)


def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 1, num_classes, in_channels)


def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 2, num_classes, in_channels)
