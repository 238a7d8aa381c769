"""The model zoo: RepDistiller/mdistiller CIFAR models and the ImageNet models of the CKD study.

Why: teachers and students must be exactly the networks of the released CIFAR-100 teacher
checkpoints and of torchvision's ImageNet weights, so results are comparable with the literature.
Every model follows docs/CONTRACTS.md: ``model(x)`` gives logits, ``model.forward_features(x)``
gives ``(logits, {"feats", "preact_feats", "pooled_feat"})``, ``model.stage_channels()`` gives
the channel counts of ``feats``.

    >>> from ckd_lib.models import create_model, list_models, load_teacher
    >>> student = create_model("resnet8x4", num_classes=100)
    >>> teacher, info = load_teacher("resnet32x4", "resnet32x4_vanilla/ckpt_epoch_240.pth")
"""

# Importing the architecture modules fills the registry.
from . import (  # noqa: F401
    cifar_resnet,
    cifar_resnet_big,
    imagenet,
    mobilenetv2,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
from .base import FeatureModel
from .checkpoint import CheckpointMismatchError, file_sha256, load_teacher, save_checkpoint
from .registry import DATASETS, create_model, family, list_models, register

__all__ = [
    "DATASETS",
    "CheckpointMismatchError",
    "FeatureModel",
    "create_model",
    "family",
    "file_sha256",
    "list_models",
    "load_teacher",
    "register",
    "save_checkpoint",
]
