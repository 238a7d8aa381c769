"""ShuffleNetV1 (groups 3, stages 240-480-960) for CIFAR, as in RepDistiller's ``ShuffleV1``.

Why these exact definitions: ShuffleV1 is the student of the resnet32x4 and wrn_40_2 cross-
architecture pairs; its names and shapes follow the reference so its checkpoints interchange.
A 1x1 stem (24 channels, no downsampling), three stages whose first unit halves the resolution and
concatenates an average-pooled shortcut, global 4x4 average pooling, ``linear``.
State-dict names: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}``,
``linear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict, run_stage
from .registry import register
from .shuffle_common import channel_shuffle

__all__ = ["ShuffleNetV1", "ShuffleV1Unit"]


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1, with add (stride 1) or concat (2)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        # The first unit after the 24-channel stem uses an ungrouped 1x1 conv (as the reference).
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class ShuffleNetV1(FeatureModel):
    """ShuffleNetV1 for 32x32 inputs."""

    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        stages = []
        for planes, n in zip(out_planes, num_blocks, strict=True):
            units = []
            for i in range(n):
                # The first unit concatenates its input, so its branch makes only the remainder.
                units.append(
                    ShuffleV1Unit(
                        in_planes, planes - (in_planes if i == 0 else 0), 2 if i == 0 else 1, groups
                    )
                )
                in_planes = planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(out_planes[2], num_classes)
        self._stage_channels = (24, *out_planes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, f0)
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        pooled = F.avg_pool2d(f3, 4).flatten(1)
        logits = self.linear(pooled)
        return logits, feature_dict([f0, f1, f2, f3], [f0, p1, p2, p3], pooled)


@register("ShuffleV1", "cifar")
def shuffle_v1(num_classes: int = 100) -> ShuffleNetV1:
    """ShuffleNetV1, g = 3, stage widths 240/480/960, 4/8/4 units."""
    return ShuffleNetV1(num_classes=num_classes)
