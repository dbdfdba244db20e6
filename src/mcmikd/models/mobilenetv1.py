"""MobileNet-V1 1.0× (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017, Table 1) as the knowledge-distillation literature's ImageNet student (the ResNet-50 →
MobileNet-V1 pair of CRD's and mdistiller's ImageNet benchmarks), under mdistiller's name `MobileNetV1`.

Layers (Howard et al. Table 1): a 3×3 stride-2 convolution to 32 channels, then 13 depthwise-separable blocks
(3×3 depthwise conv, BN, ReLU, 1×1 pointwise conv, BN, ReLU) with output channels
64, 128, 128, 256, 256, 512 (×6), 1024, 1024 and stride 2 at the 2nd, 4th, 6th and 12th blocks, global average
pooling and one linear layer. Convolutions have no bias; BN follows each. For 1000 classes this is 4,231,976
parameters (the paper's Table 8: 4.2 million). Global pooling is `GlobalAvgPool` (any input size, deterministic
CUDA backward), where the 224 px code of mdistiller and CRD writes a 7×7 average pool (the same at 224 px).
The initialisation is PyTorch's default for every layer (no initialisation loop).

The blocks are grouped by output resolution so that the feature maps line up with the ImageNet ResNets' stages
(`mcmikd.models.imagenet_resnet`), shapes for a 224 px input:
  feats[0]  stem: first conv and block 1                       (64, 112, 112)
  feats[1]  layer1: blocks 2-3                                 (128, 56, 56)
  feats[2]  layer2: blocks 4-5                                 (256, 28, 28)
  feats[3]  layer3: blocks 6-11                                (512, 14, 14)
  feats[4]  layer4: blocks 12-13                               (1024, 7, 7)
  pooled    global average of layer4                           1024
feats[1..4] are the four maps mdistiller's MobileNetV1 returns as its `feats`; `preact_feats[i]` is the map before
the last block's final ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, GlobalAvgPool, run_stage


class DepthwiseSeparable(nn.Module):
    """3×3 depthwise conv (stride `stride`), BN, ReLU, 1×1 pointwise conv, BN, ReLU (Howard et al. Fig. 3)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        preact = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ConvBN(nn.Module):
    """The stem's 3×3 convolution, BN and ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


# (output channels, stride) of the 13 depthwise-separable blocks, per group (Howard et al. Table 1)
STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)


class MobileNetV1(ClassifierNet):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        in_planes, groups = 32, []
        for blocks in STAGES:
            units = []
            for out_planes, stride in blocks:
                units.append(DepthwiseSeparable(in_planes, out_planes, stride))
                in_planes = out_planes
            groups.append(nn.Sequential(*units))
        self.conv1 = ConvBN(in_channels, 32, 2)
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = groups
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(in_planes, num_classes)
        self.stage_channels = [blocks[-1][0] for blocks in STAGES]
        self.embedding_dim = in_planes
        self.cam_layer = "layer4"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        f0, p0 = run_stage(self.stem, self.conv1(x))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        f4, p4 = run_stage(self.layer4, f3)
        pooled = torch.flatten(self.avgpool(f4), 1)
        return Features([f0, f1, f2, f3, f4], [p0, p1, p2, p3, p4], pooled, self.fc(pooled))


def mobilenetv1(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels)
