"""torchvision's ImageNet ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016)
as `ClassifierNet`s, under torchvision's names (`resnet18`, `resnet34`, `resnet50`; the CIFAR zoo's RepDistiller
names are `resnet8`..`resnet110`, `resnet8x4`, `resnet32x4` and `ResNet50`, so no name is shared).

The network is torchvision's own (`torchvision.models.resnet18/34/50(weights=None)`): its modules are adopted
as they are, under torchvision's names (`conv1`, `bn1`, `maxpool`, `layer1`..`layer4`, `fc`), so a state dict
of torchvision's released weights loads with `load_state_dict` (`teachers.weights`,
`mcmikd.jobs.teacher.load_weights`, from a local file: nothing is downloaded). Two changes, neither adding a
parameter: the global average pooling is `GlobalAvgPool` (deterministic CUDA backward, same values), and with
`in_channels` ≠ 3 the stem convolution is rebuilt for that many input channels. The initialisation is torchvision's
(Kaiming-normal fan-out convs, BN 1/0, PyTorch's default for `fc`).

Shapes for a 224 px input (ResNet-18/34 | ResNet-50):
  feats[0]  stem, relu(bn1(conv1(x))) before the max-pool    (64, 112, 112)
  feats[1]  layer1                                            (64 | 256, 56, 56)
  feats[2]  layer2                                            (128 | 512, 28, 28)
  feats[3]  layer3                                            (256 | 1024, 14, 14)
  feats[4]  layer4                                            (512 | 2048, 7, 7)
  pooled    global average of layer4                          512 | 2048
The stem map is taken before the max-pool, as in the ImageNet ResNet of mdistiller and CRD. `preact_feats[i]` is
the stage's last block output before its final ReLU (residual sum); `preact_feats[0]` is the stem map itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcmikd.models.base import ClassifierNet, Features, GlobalAvgPool


def block_with_preact(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, pre-activation) of one torchvision `BasicBlock` or `Bottleneck`, using the block's own modules in
    the order of its `forward` (so `output` equals `block(x)` exactly): the residual sum before the final ReLU is
    the pre-activation. The final ReLU is out of place (torchvision's `block.relu` is in place and would
    overwrite the pre-activation)."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):  # Bottleneck
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:  # BasicBlock
        out = block.bn2(block.conv2(out))
    preact = out + identity
    return F.relu(preact), preact


def stage_with_preact(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a torchvision stage block by block; (output, pre-activation of its last block)."""
    *head, last = stage
    for block in head:
        x = block(x)
    return block_with_preact(last, x)


class TorchvisionResNet(ClassifierNet):
    """A torchvision ImageNet ResNet (its modules adopted under their own names) with `forward_features`."""

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        from torchvision import models

        net = getattr(models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                                  padding=old.padding, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc"):
            setattr(self, name, getattr(net, name))
        self.avgpool = GlobalAvgPool()
        widths = [stage[-1].bn3.num_features if hasattr(stage[-1], "bn3") else stage[-1].bn2.num_features
                  for stage in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.stage_channels = [self.bn1.num_features, *widths]
        self.embedding_dim = widths[-1]
        self.cam_layer = "layer4"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward_features(self, x: torch.Tensor) -> Features:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1, p1 = stage_with_preact(self.layer1, self.maxpool(f0))
        f2, p2 = stage_with_preact(self.layer2, f1)
        f3, p3 = stage_with_preact(self.layer3, f2)
        f4, p4 = stage_with_preact(self.layer4, f3)
        pooled = torch.flatten(self.avgpool(f4), 1)
        return Features([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled, self.fc(pooled))


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(18, num_classes, in_channels)


def resnet34(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(34, num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(50, num_classes, in_channels)
