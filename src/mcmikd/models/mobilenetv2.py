"""MobileNetV2 (Sandler et al., CVPR 2018) for CIFAR, RepDistiller's `mobile_half`: expansion 6, width 0.5.

The variant comes from "Knowledge Distillation via Route Constrained Optimization" (Jin et al., ICCV 2019):
a stride-2 stem and a 1x1 expansion conv even in the t=1 block. Module names follow RepDistiller so that its
checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, GlobalAvgPool, init_weights


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),  # pointwise expansion
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # linear bottleneck: no ReLU
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


# (channels, repeats, first stride) per group of blocks at width 1; only the first group does not expand.
_GROUPS = [(16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]
# `feats` are taken after these groups (RepDistiller's f1..f4).
_FEATURE_GROUPS = (1, 2, 4, 6)


class MobileNetV2(ClassifierNet):
    def __init__(self, expand_ratio: int = 6, width_mult: float = 0.5, num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        self.stage_channels = [channels]
        for i, (c, n, s) in enumerate(_GROUPS):
            out, t = int(c * width_mult), 1 if i == 0 else expand_ratio
            group = []
            for stride in [s] + [1] * (n - 1):
                group.append(InvertedResidual(channels, out, stride, t))
                channels = out
            self.blocks.append(nn.Sequential(*group))
            if i in _FEATURE_GROUPS:
                self.stage_channels.append(out)
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, self.last_channel, 1)
        self.avgpool = GlobalAvgPool()
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))

        self.embedding_dim = self.last_channel
        self.cam_layer = "conv2"

        init_weights(self, linear="normal")

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(self.avgpool(self.conv2(x)), 1)
        return pooled, self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self._head(x)[1]

    def forward_features(self, x: torch.Tensor) -> Features:
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in _FEATURE_GROUPS:
                feats.append(x)
        pooled, logits = self._head(x)
        # Block outputs are linear bottlenecks without a ReLU, so RepDistiller's preact maps are the same maps.
        return Features(feats, list(feats), pooled, logits)


def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """RepDistiller's `mobile_half`."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
