"""ResNet18 and ResNet50 for CIFAR (the ``ResNet50`` teacher of the ResNet50 -> MobileNetV2 pair).

Why a separate module: RepDistiller's ``resnetv2.py`` defines these with a different naming scheme
from the small ResNets (``shortcut`` instead of ``downsample``, ``linear`` instead of ``fc``) and a
3x3 stride-1 stem with no max-pool, i.e. the ImageNet widths on 32x32 inputs. The released
``ResNet50_vanilla`` checkpoint needs exactly these names.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict, run_stage
from .registry import register

__all__ = ["CifarBigResNet", "BasicBlockV2", "BottleneckV2"]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Projection shortcut when the shape changes, else an empty Sequential (identity, no keys)."""
    if stride != 1 or cin != cout:
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
        )
    return nn.Sequential()


class BasicBlockV2(nn.Module):
    """3x3-3x3 residual block (ResNet18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        preact = out + self.shortcut(x)
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class BottleneckV2(nn.Module):
    """1x1-3x3-1x1 bottleneck with 4x expansion (ResNet50/101)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + self.shortcut(x)
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class CifarBigResNet(FeatureModel):
    """Four-stage ResNet (64-128-256-512 base widths) with a 3x3 stride-1 stem for 32x32 inputs."""

    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self._stage_channels = (64,) + tuple(p * block.expansion for p in (64, 128, 256, 512))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # residual branches start at zero (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, (BasicBlockV2, BottleneckV2)):
                    nn.init.constant_(m.last_bn().weight, 0)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        f4, p4 = run_stage(self.layer4, f3)
        pooled = self.avgpool(f4).flatten(1)
        logits = self.linear(pooled)
        return logits, feature_dict([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled)


@register("ResNet18", "cifar")
def resnet18_cifar(num_classes: int = 100, **kwargs) -> CifarBigResNet:
    """ResNet18, CIFAR variant (3x3 stem, no max-pool)."""
    return CifarBigResNet(BasicBlockV2, (2, 2, 2, 2), num_classes, **kwargs)


@register("ResNet50", "cifar")
def resnet50_cifar(num_classes: int = 100, **kwargs) -> CifarBigResNet:
    """ResNet50, CIFAR variant (3x3 stem, no max-pool)."""
    return CifarBigResNet(BottleneckV2, (3, 4, 6, 3), num_classes, **kwargs)
