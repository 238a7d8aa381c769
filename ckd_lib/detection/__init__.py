"""Detection distillation on MS-COCO with torchvision Faster/Mask R-CNN (the paper's COCO table).

- ``models``: the detectors (ResNet18/50/101 and MobileNetV2 FPN backbones), ``DetectorSpec``.
- ``convert``: Detectron2 model-zoo checkpoints -> this layout (the R101 teachers).
- ``distill``: the student's RoI-head logits against the teacher's on the same sampled
  proposals (CKD, DKD, KD) and ReviewKD on the FPN levels.
- ``coco``, ``sampler``, ``shapes``: COCO-format data, resumable batches, a generated test set.
- ``evaluate``: pycocotools box and mask AP.
- ``config``, ``engine``, ``train``: one run from a recipe, with checkpoints, resume and DDP.

The names below are loaded on first use, so importing one submodule (the report reads only
``config`` and ``evaluate``) does not pull in the training engine.
"""

from importlib import import_module

_EXPORTS = {
    "DetectionConfig": "config",
    "DetectionDistiller": "distill",
    "DetectorSpec": "models",
    "build_detector": "models",
    "detection_methods": "config",
    "evaluate_detector": "engine",
    "load_detector": "models",
    "train_detection": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
