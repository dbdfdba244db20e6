"""VGG with batch normalisation (Simonyan & Zisserman, ICLR 2015) for CIFAR, as used by RepDistiller.

RepDistiller's `vggN` names are its `vggN_bn` networks: five conv-BN-ReLU blocks separated by max-pooling, global
average pooling and a single linear classifier (no fully connected stack). Module names follow RepDistiller so
that its checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, GlobalAvgPool, init_weights

_CONFIGS = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


class VGGBlock(nn.Sequential):
    """conv-BN-ReLU units. The final ReLU is a module of the block (RepDistiller applies it functionally), so a
    hook on the block sees the activated map; `forward_with_preact` also returns the map before it."""

    def __init__(self, in_channels: int, widths: list[int]):
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            in_channels = width
        super().__init__(*layers)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *body, relu = self
        for layer in body:
            x = layer(x)
        return relu(x), x


class VGG(ClassifierNet):
    def __init__(self, depth: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        cfg = _CONFIGS[depth]
        ins = [in_channels] + [widths[-1] for widths in cfg[:-1]]
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            VGGBlock(c, widths) for c, widths in zip(ins, cfg)
        )
        self.pool0, self.pool1, self.pool2, self.pool3 = (nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(4))
        self.pool4 = GlobalAvgPool()
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)

        self.stage_channels = [widths[-1] for widths in cfg]
        self.embedding_dim = cfg[-1][-1]
        self.cam_layer = "block4"

        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # RepDistiller pools before block4 only for 64 px inputs (Tiny-ImageNet); CIFAR's 4x4 maps are kept.
        pool_before_last = x.shape[2] == 64
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(self.pool0(self.block0(x)))))))
        x = self.block4(self.pool3(x) if pool_before_last else x)
        return self.classifier(torch.flatten(self.pool4(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        pool_before_last = x.shape[2] == 64
        f0 = self.block0(x)
        f1, p1 = self.block1.forward_with_preact(self.pool0(f0))
        f2, p2 = self.block2.forward_with_preact(self.pool1(f1))
        f3, p3 = self.block3.forward_with_preact(self.pool2(f2))
        f4, p4 = self.block4.forward_with_preact(self.pool3(f3) if pool_before_last else f3)
        pooled = torch.flatten(self.pool4(f4), 1)
        # RepDistiller's preact list keeps the activated block0 output as its first entry.
        return Features([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled, self.classifier(pooled))


def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(8, num_classes, in_channels)


def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(11, num_classes, in_channels)


def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(13, num_classes, in_channels)


def vgg16(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(16, num_classes, in_channels)


def vgg19(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return VGG(19, num_classes, in_channels)
