"""Detection distillation on MS-COCO with torchvision Faster/Mask R-CNN (the paper's COCO table).

- ``models``: the detectors (ResNet18/50/101 and MobileNetV2 FPN backbones), ``DetectorSpec``.
- ``convert``: Detectron2 model-zoo checkpoints -> this layout (the R101 teachers).
- ``distill``: the student's RoI-head logits against the teacher's on the same sampled
  proposals (CKD, DKD, KD) and ReviewKD on the FPN levels.
- ``coco``, ``sampler``, ``shapes``: COCO-format data, resumable batches, a generated test set.
- ``evaluate``: pycocotools box and mask AP.
- ``config``, ``engine``, ``train``: one run from a recipe, with checkpoints, resume and DDP.
"""

import warnings

# The engine imports the classification engine's package, whose tqdm.auto warns in every kernel
# without ipywidgets; the detection engine prints log lines, so the warning is noise here.
warnings.filterwarnings("ignore", message="IProgress not found")

from ckd_lib.detection.config import DetectionConfig  # noqa: E402
from ckd_lib.detection.distill import DETECTION_METHODS, DetectionDistiller  # noqa: E402
from ckd_lib.detection.engine import evaluate_detector, train_detection  # noqa: E402
from ckd_lib.detection.models import DetectorSpec, build_detector, load_detector  # noqa: E402

__all__ = [
    "DETECTION_METHODS",
    "DetectionConfig",
    "DetectionDistiller",
    "DetectorSpec",
    "build_detector",
    "evaluate_detector",
    "load_detector",
    "train_detection",
]
