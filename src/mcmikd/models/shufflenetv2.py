"""ShuffleNet V2 1x (Ma et al., ECCV 2018) for CIFAR, RepDistiller's `ShuffleV2`: 116-232-464 channels.

The CIFAR variant has a 1x1 stem without max-pooling. Module names follow RepDistiller so that its checkpoints
load with `load_state_dict`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.models.base import ThreeStageNet, adaptive_avg_pool, channel_shuffle


class SplitUnit(nn.Module):
    """Stride-1 unit: half of the channels pass through, the other half goes through 1x1-dw3x3-1x1."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit output and RepDistiller's preact: the concatenation before the last ReLU *and* the shuffle."""
        kept, x = x.chunk(2, dim=1)
        out = self.bn3(self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))))
        out_act = channel_shuffle(torch.cat([kept, F.relu(out)], 1), 2)
        return out_act, torch.cat([kept, out], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class DownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input and each produces half of the output channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch: dw3x3 (stride 2) - 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1 - dw3x3 (stride 2) - 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ThreeStageNet):
    def __init__(self, out_channels: tuple[int, int, int, int], num_blocks: tuple[int, int, int],
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        channels = 24
        stages = []
        for width, blocks in zip(out_channels[:3], num_blocks):
            stages.append(nn.Sequential(DownUnit(channels, width), *(SplitUnit(width) for _ in range(blocks))))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(channels, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.relu2 = nn.ReLU()  # a module (RepDistiller uses F.relu) so that Eigen-CAM can hook the head map
        self.linear = nn.Linear(out_channels[3], num_classes)

        self.stage_channels = [24, *out_channels[:3]]
        self.embedding_dim = out_channels[3]
        self.cam_layer = "relu2"

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu2(self.bn2(self.conv2(x)))
        pooled = torch.flatten(adaptive_avg_pool(x, 1), 1)
        return pooled, self.linear(pooled)


def shufflev2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)
