"""ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) for CIFAR, as in RepDistiller.

The ImageNet bottleneck network with a 3x3 stride-1 stem and no max-pooling, so four stages at 32-32-16-8-4 px
for CIFAR inputs. Module names follow RepDistiller so that its checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, GlobalAvgPool, init_weights, run_stage


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ResNet(ClassifierNet):
    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, stages, self.stage_channels = 64, [], [64]
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            units = [Bottleneck(in_planes, planes, stride)]
            in_planes = planes * Bottleneck.expansion
            units += [Bottleneck(in_planes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*units))
            self.stage_channels.append(in_planes)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = GlobalAvgPool()
        self.linear = nn.Linear(in_planes, num_classes)

        self.embedding_dim = in_planes
        self.cam_layer = "layer4"

        init_weights(self, linear="keep")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        f4, p4 = run_stage(self.layer4, f3)
        pooled = torch.flatten(self.avgpool(f4), 1)
        return Features([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled, self.linear(pooled))


def resnet50(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes, in_channels)
