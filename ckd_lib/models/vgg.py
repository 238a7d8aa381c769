"""VGG with batch norm for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19), as in RepDistiller.

Why these exact definitions: the ``vgg13`` teacher released with RepDistiller must load strictly.
Five conv blocks ``block0`` ... ``block4`` (each a Sequential of conv(bias)-BN-ReLU with the last
ReLU removed, so the block ends at a BN and its output is the pre-activation), max-pools between
blocks (the one after ``block3`` only for 64x64 inputs), global average pooling and a single
``classifier`` Linear(512, classes). State-dict names: ``block{b}.{3j}`` (conv weight and bias),
``block{b}.{3j+1}`` (BN), ``classifier``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FeatureModel, feature_dict, init_he_normal_fan_out
from .registry import register

__all__ = ["VGG", "VGG_CONFIGS"]

#: Output channels of the convs of each of the five blocks.
VGG_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def _make_block(widths: tuple[int, ...], cin: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers.append(nn.Conv2d(cin, w, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.ReLU(inplace=True))
        cin = w
    return nn.Sequential(*layers[:-1])  # the block ends before its last ReLU


class VGG(FeatureModel):
    """VGG for 32x32 (or 64x64) inputs."""

    def __init__(self, cfg, num_classes: int = 100, batch_norm: bool = True):
        super().__init__()
        cins = [3] + [c[-1] for c in cfg[:-1]]
        self.block0 = _make_block(cfg[0], cins[0], batch_norm)
        self.block1 = _make_block(cfg[1], cins[1], batch_norm)
        self.block2 = _make_block(cfg[2], cins[2], batch_norm)
        self.block3 = _make_block(cfg[3], cins[3], batch_norm)
        self.block4 = _make_block(cfg[4], cins[4], batch_norm)
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        self._stage_channels = tuple(c[-1] for c in cfg)

        init_he_normal_fan_out(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = x.shape[2]  # a shape, not data: static under torch.compile
        f0 = F.relu(self.block0(x))
        p1 = self.block1(self.pool0(f0))
        f1 = F.relu(p1)
        p2 = self.block2(self.pool1(f1))
        f2 = F.relu(p2)
        p3 = self.block3(self.pool2(f2))
        f3 = F.relu(p3)
        y = self.pool3(f3) if h == 64 else f3
        p4 = self.block4(y)
        f4 = F.relu(p4)
        pooled = self.pool4(f4).flatten(1)
        logits = self.classifier(pooled)
        return logits, feature_dict([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled)


def _factory(name: str) -> None:
    def build(num_classes: int = 100) -> VGG:
        return VGG(VGG_CONFIGS[name], num_classes, batch_norm=True)

    build.__name__ = name
    build.__doc__ = f"{name} with batch norm (RepDistiller's {name}_bn)."
    register(name, "cifar")(build)


for _name in VGG_CONFIGS:
    _factory(_name)
