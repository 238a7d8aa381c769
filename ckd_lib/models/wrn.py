"""Wide ResNets for CIFAR (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), Zagoruyko & Komodakis.

Why these exact definitions: the ``wrn_40_2`` teacher released with RepDistiller must load
strictly. State-dict names: ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2}``,
``block{k}.layer.0.convShortcut`` where the width changes, final ``bn1``, ``fc``.

The blocks are pre-activation (BN-ReLU-conv), so a stage's output carries no ReLU; mdistiller's
"pre-activation" features are the *next* BN's output before its ReLU (``block2.layer.0.bn1``,
``block3.layer.0.bn1``, final ``bn1``). mdistiller computes them by calling those BNs a second
time; here each BN runs once and its output is kept, which gives the same tensors (and, in
training mode, updates the BN running statistics once per step instead of twice).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict
from .registry import register

__all__ = ["WideResNet", "WideBasicBlock", "NetworkBlock"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    When the width changes the shortcut is a 1x1 conv (``convShortcut``) applied to the
    *activated* input, as in the reference; otherwise it is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(
                in_planes, out_planes, 1, stride=stride, padding=0, bias=False
            )

    def forward_input_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(block output, bn1(x))``: the latter is the input's pre-activation."""
        pre = self.bn1(x)
        act = F.relu(pre)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_input_preact(x)[0]


class NetworkBlock(nn.Module):
    """One stage: ``nb_layers`` blocks in ``self.layer`` (the name is part of the state dict)."""

    def __init__(
        self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                )
                for i in range(nb_layers)
            ]
        )

    def forward_input_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the stage; also return its first BN's output (the input's pre-activation)."""
        out, pre = self.layer[0].forward_input_preact(x)
        for i in range(1, len(self.layer)):
            out = self.layer[i](out)
        return out, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_input_preact(x)[0]


class WideResNet(FeatureModel):
    """WRN-depth-k for 32x32 inputs: depth = 6n+4, widths 16, 16k, 32k, 64k."""

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int = 100, drop_rate: float = 0.0
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)
        self._stage_channels = ch

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, p1 = self.block2.forward_input_preact(f1)
        f3, p2 = self.block3.forward_input_preact(f2)
        p3 = self.bn1(f3)
        pooled = F.avg_pool2d(F.relu(p3), 8).flatten(1)
        logits = self.fc(pooled)
        return logits, feature_dict([f0, f1, f2, f3], [f0, p1, p2, p3], pooled)


def _factory(depth: int, k: int) -> None:
    name = f"wrn_{depth}_{k}"

    def build(num_classes: int = 100, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, k, num_classes, drop_rate)

    build.__name__ = name
    build.__doc__ = f"{name}: Wide ResNet, depth {depth}, widen factor {k}."
    register(name, "cifar")(build)


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _factory(_d, _k)
