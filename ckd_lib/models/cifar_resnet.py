"""The small CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

Why these exact definitions: the CIFAR-100 teachers released with RepDistiller (and re-used by
mdistiller and the CKD authors) were trained with them, so parameter names, shapes and the order
of operations must match for ``load_state_dict(strict=True)`` and identical outputs. Depth is
6n+2 with n basic blocks per stage; three stages at 32, 16 and 8 pixels; an 8x8 average pool.
State-dict names: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
``layer{k}.0.downsample.{0,1}`` where the shape changes, ``fc``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict, run_stage
from .registry import register

__all__ = ["CifarResNet", "BasicBlock"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs plus a shortcut (1x1 conv-BN ``downsample`` if the shape changes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(relu(out + shortcut), out + shortcut)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class CifarResNet(FeatureModel):
    """ResNet for 32x32 inputs; ``widths`` = (stem, stage1, stage2, stage3) channels."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_stage(widths[0], widths[1], n, stride=1)
        self.layer2 = self._make_stage(widths[1], widths[2], n, stride=2)
        self.layer3 = self._make_stage(widths[2], widths[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(widths[3], num_classes)
        self._stage_channels = tuple(widths)

        # The initialisation of the reference code (matters when training from scratch).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def _make_stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(cin, cout, stride)]
        layers += [BasicBlock(cout, cout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = F.relu(self.bn1(self.conv1(x)))  # 32x32
        f1, p1 = run_stage(self.layer1, f0)  # 32x32
        f2, p2 = run_stage(self.layer2, f1)  # 16x16
        f3, p3 = run_stage(self.layer3, f2)  # 8x8
        pooled = self.avgpool(f3).flatten(1)
        logits = self.fc(pooled)
        return logits, feature_dict([f0, f1, f2, f3], [f0, p1, p2, p3], pooled)


_NARROW = (16, 16, 32, 64)
_WIDE_X4 = (32, 64, 128, 256)


def _factory(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)

    build.__name__ = name
    build.__doc__ = f"{name}: CIFAR ResNet, depth {depth}, channels {widths}."
    register(name, "cifar")(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _factory(f"resnet{_depth}", _depth, _NARROW)
_factory("resnet8x4", 8, _WIDE_X4)
_factory("resnet32x4", 32, _WIDE_X4)
