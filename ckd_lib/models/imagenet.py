"""ImageNet zoo: torchvision's ResNet18/34/50/101 and mdistiller's MobileNetV1.

Why subclass torchvision: the ImageNet teachers are torchvision's pretrained weights, so the
ResNets *are* ``torchvision.models.ResNet`` (same modules, same state-dict keys, same forward
arithmetic); only the blocks gain a ``forward_preact`` so a stage's pre-ReLU output can be read
without a second pass, and the model gains ``forward_features``.

Feature lists follow mdistiller's ImageNet models. ResNet: the stem after BN-ReLU (before
max-pool) and the four stage outputs; ``preact_feats`` holds the stage outputs before their ReLU
and, first, the stem *after* its ReLU: mdistiller means to store the stem before the ReLU, but its
in-place ReLU overwrites that tensor, so the value it actually hands on is post-ReLU (as in all
CIFAR models, where ``preact_feats[0] is feats[0]``). MobileNetV1: the
outputs of units 3, 5, 11 and 13 (128, 256, 512, 1024 channels) and *no* stem entry, exactly as
mdistiller (its ReviewKD config for ResNet50 -> MobileNetV1 relies on this list).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models import resnet as tv_resnet

from .base import FeatureModel, feature_dict, run_stage
from .registry import register

__all__ = ["ImageNetResNet", "MobileNetV1"]


class _BasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock plus ``forward_preact`` (same parameters, same arithmetic)."""

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        preact = out + identity
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class _Bottleneck(tv_resnet.Bottleneck):
    """torchvision's Bottleneck plus ``forward_preact`` (same parameters, same arithmetic)."""

    def forward_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        preact = out + identity
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]


class ImageNetResNet(FeatureModel, tvm.ResNet):
    """A ``torchvision.models.ResNet`` with the zoo interface; state dicts interchange."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000, **kw):
        super().__init__(block, layers, num_classes=num_classes, **kw)
        e = block.expansion
        self._stage_channels = (64, 64 * e, 128 * e, 256 * e, 512 * e)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1, p1 = run_stage(self.layer1, self.maxpool(f0))
        f2, p2 = run_stage(self.layer2, f1)
        f3, p3 = run_stage(self.layer3, f2)
        f4, p4 = run_stage(self.layer4, f3)
        pooled = self.avgpool(f4).flatten(1)
        logits = self.fc(pooled)
        return logits, feature_dict([f0, f1, f2, f3, f4], [f0, p1, p2, p3, p4], pooled)


def _resnet(tv_name: str, block, layers, num_classes: int, weights=None, **kw) -> ImageNetResNet:
    model = ImageNetResNet(block, layers, num_classes=num_classes, **kw)
    if weights is not None:
        # e.g. weights="IMAGENET1K_V1" or "DEFAULT": torchvision's enum, downloaded or cached.
        enum = tvm.get_model_weights(tv_name)
        try:
            w = enum.verify(weights)
        except (KeyError, TypeError) as exc:
            valid = ["DEFAULT", *(m.name for m in enum)]
            raise ValueError(f"unknown weights {weights!r} for {tv_name}; valid: {valid}") from exc
        model.load_state_dict(w.get_state_dict(progress=True, check_hash=True))
    return model


@register("ResNet18", "imagenet")
def resnet18_imagenet(num_classes: int = 1000, weights=None, **kw) -> ImageNetResNet:
    """torchvision ResNet18 (``weights``: a torchvision weights name such as "IMAGENET1K_V1")."""
    return _resnet("resnet18", _BasicBlock, [2, 2, 2, 2], num_classes, weights, **kw)


@register("ResNet34", "imagenet")
def resnet34_imagenet(num_classes: int = 1000, weights=None, **kw) -> ImageNetResNet:
    """torchvision ResNet34 (the ImageNet teacher of ResNet18)."""
    return _resnet("resnet34", _BasicBlock, [3, 4, 6, 3], num_classes, weights, **kw)


@register("ResNet50", "imagenet")
def resnet50_imagenet(num_classes: int = 1000, weights=None, **kw) -> ImageNetResNet:
    """torchvision ResNet50 (the ImageNet teacher of MobileNetV1)."""
    return _resnet("resnet50", _Bottleneck, [3, 4, 6, 3], num_classes, weights, **kw)


@register("ResNet101", "imagenet")
def resnet101_imagenet(num_classes: int = 1000, weights=None, **kw) -> ImageNetResNet:
    """torchvision ResNet101."""
    return _resnet("resnet101", _Bottleneck, [3, 4, 23, 3], num_classes, weights, **kw)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3-BN-ReLU then pointwise 1x1-BN. The closing ReLU (index 5 in mdistiller, no
    parameters) is applied in ``forward`` so the pre-activation is available."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
    )


# (output channels, stride) of the 13 depthwise-separable units.
_MBV1_UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
               (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))  # fmt: skip
_MBV1_TAPS = (3, 5, 11, 13)  # units whose outputs are the stage features


class MobileNetV1(FeatureModel):
    """MobileNetV1 (1.0x, 224 px) as in mdistiller: ``model.0`` stem, ``model.1..13`` units, ``fc``.

    Global average pooling uses a kernel the size of the final map: bit-identical to mdistiller's
    AvgPool2d(7) at 224 px, and still global at other input sizes (mdistiller's would not be).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        units = [_conv_bn(3, 32, 2)]
        cin = 32
        for cout, stride in _MBV1_UNITS:
            units.append(_conv_dw(cin, cout, stride))
            cin = cout
        self.model = nn.Sequential(*units)
        self.fc = nn.Linear(1024, num_classes)
        self._stage_channels = (128, 256, 512, 1024)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x = self.model[0](x)
        feats, preacts = [], []
        for i in range(1, len(self.model)):
            pre = self.model[i](x)
            x = F.relu(pre)
            if i in _MBV1_TAPS:
                preacts.append(pre)
                feats.append(x)
        pooled = F.avg_pool2d(x, kernel_size=x.shape[-2:]).flatten(1)
        logits = self.fc(pooled)
        return logits, feature_dict(feats, preacts, pooled)


@register("MobileNetV1", "imagenet")
def mobilenet_v1(num_classes: int = 1000) -> MobileNetV1:
    """mdistiller's ImageNet MobileNetV1 (4,231,976 parameters for 1000 classes)."""
    return MobileNetV1(num_classes=num_classes)
