"""ShuffleNetV2 (1x width: 116-232-464, head 1024) for CIFAR, as in RepDistiller's ``ShuffleV2``.

Why these exact definitions: ShuffleV2 is the student of the resnet32x4 -> ShuffleV2 pair; names
and shapes follow the reference so its checkpoints interchange. A 1x1 stem (24 channels), three
stages each opening with a stride-2 ``DownBlock`` (units 0) followed by channel-split units,
a 1x1 ``conv2``/``bn2`` head to 1024 channels, 4x4 average pooling, ``linear``.

Pre-activation feature of a stage (mdistiller): ``cat([untouched half, last BN output])`` of the
last unit, taken *before* the channel shuffle, while the stage output is shuffled.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict, run_stage
from .registry import register
from .shuffle_common import channel_shuffle

__all__ = ["ShuffleNetV2", "SplitUnit", "DownBlock"]


class SplitUnit(nn.Module):
    """Split channels in two; transform one half (1x1 - dw3x3 - 1x1); concat; shuffle."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5):
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = int(x.shape[1] * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        preact = torch.cat([x1, pre], 1)
        out = channel_shuffle(torch.cat([x1, F.relu(pre)], 1), 2)
        return out, preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class DownBlock(nn.Module):
    """Stride-2 unit: branches dw3x3-1x1 and 1x1-dw3x3-1x1 on the full input, concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(FeatureModel):
    """ShuffleNetV2 for 32x32 inputs."""

    def __init__(
        self,
        out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        stages = []
        for cout, n in zip(out_channels[:3], num_blocks, strict=True):
            stages.append(nn.Sequential(DownBlock(cin, cout), *[SplitUnit(cout) for _ in range(n)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self._stage_channels = (24, *out_channels[:3])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        out = F.relu(self.bn2(self.conv2(f3)))
        pooled = F.avg_pool2d(out, 4).flatten(1)
        logits = self.linear(pooled)
        return logits, feature_dict([f0, f1, f2, f3], [f0, p1, p2, p3], pooled)


@register("ShuffleV2", "cifar")
def shuffle_v2(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNetV2 1x (net_size 1): stage widths 116/232/464, 3/7/3 units, head 1024."""
    return ShuffleNetV2(num_classes=num_classes)
