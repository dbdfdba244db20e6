"""ShuffleNet V1 (Zhang et al., CVPR 2018) for CIFAR, RepDistiller's `ShuffleV1`: 3 groups, 240-480-960 channels.

The CIFAR variant has a 1x1 stem without max-pooling and, unlike the paper, a ReLU after the depthwise conv.
Module names follow RepDistiller so that its checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.models.base import ThreeStageNet, adaptive_avg_pool, channel_shuffle

__all__ = ["ShuffleNetV1", "ShuffleUnit", "channel_shuffle", "shufflev1"]


class ShuffleUnit(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        mid_planes = out_planes // 4
        # The first pointwise conv after the 24-channel stem is not grouped (too few input channels).
        self.first_groups = 1 if in_planes == 24 else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # Downsampling units concatenate an average-pooled shortcut instead of adding it.
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        preact = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ShuffleNetV1(ThreeStageNet):
    def __init__(self, out_planes: tuple[int, int, int], num_blocks: tuple[int, int, int], groups: int,
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        planes = 24
        stages = []
        for width, blocks in zip(out_planes, num_blocks):
            # The first (stride-2) unit's branch only produces what the concatenated shortcut does not.
            units = [ShuffleUnit(planes, width - planes, 2, groups)]
            units += [ShuffleUnit(width, width, 1, groups) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*units))
            planes = width
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(out_planes[2], num_classes)

        self.stage_channels = [24, *out_planes]
        self.embedding_dim = out_planes[2]
        self.cam_layer = "layer3"

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.flatten(adaptive_avg_pool(x, 1), 1)
        return pooled, self.linear(pooled)


def shufflev1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)
