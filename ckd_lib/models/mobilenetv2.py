"""MobileNetV2 for CIFAR, width 0.5, expansion 6: RepDistiller's ``mobile_half``.

Why these exact definitions: the vgg13 -> MobileNetV2 and ResNet50 -> MobileNetV2 pairs use this
student, and students trained by RepDistiller/mdistiller load strictly. Differences from the
ImageNet MobileNetV2 that matter: every inverted residual has the 1x1 expansion conv (also for
t = 1), the stem has stride 2, and the head width stays 1280 for width 0.5.
State-dict names: ``conv1.{0,1}``, ``blocks.{s}.{i}.conv.{0,1,3,4,6,7}``, ``conv2.{0,1}``,
``classifier.0``.

Features follow mdistiller: the stem output and the outputs of block groups 1, 2, 4 and 6. A group
ends in a linear bottleneck (no ReLU), so ``preact_feats`` equals ``feats`` here (mdistiller omits
the key for this model).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import FeatureModel, feature_dict, init_he_normal_fan_out
from .registry import register

__all__ = ["MobileNetV2", "InvertedResidual"]

# (expansion t, output channels c, repeats n, first stride s) before width scaling; t=None -> T.
_SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))  # fmt: skip


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; identity shortcut when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(FeatureModel):
    """MobileNetV2 for 32x32 inputs with expansion ``T`` and width multiplier ``width_mult``."""

    def __init__(self, T: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        cin = int(32 * width_mult)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        )
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTING:
            cout = int(c * width_mult)
            group = []
            for stride in [s] + [1] * (n - 1):
                group.append(InvertedResidual(cin, cout, stride, T if t is None else t))
                cin = cout
            self.blocks.append(nn.Sequential(*group))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(
            nn.Conv2d(cin, self.last_channel, 1, 1, 0, bias=False),
            nn.BatchNorm2d(self.last_channel),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        # The final map is 2x2 for 32x32 inputs; ceil_mode as in the reference.
        self.avgpool = nn.AvgPool2d(2, ceil_mode=True)
        self._stage_channels = tuple(int(c * width_mult) for c in (32, 24, 32, 96, 320))

        init_he_normal_fan_out(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = self.conv1(x)
        f1 = self.blocks[1](self.blocks[0](f0))
        f2 = self.blocks[2](f1)
        f3 = self.blocks[4](self.blocks[3](f2))
        f4 = self.blocks[6](self.blocks[5](f3))
        pooled = self.avgpool(self.conv2(f4)).flatten(1)
        logits = self.classifier(pooled)
        feats = [f0, f1, f2, f3, f4]
        return logits, feature_dict(feats, list(feats), pooled)


@register("MobileNetV2", "cifar")
def mobile_half(num_classes: int = 100) -> MobileNetV2:
    """MobileNetV2 x0.5, expansion 6 (RepDistiller's ``mobile_half``)."""
    return MobileNetV2(T=6, width_mult=0.5, num_classes=num_classes)
