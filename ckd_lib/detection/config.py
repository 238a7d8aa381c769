"""One detection run, described completely: ``DetectionConfig``.

A config is everything that decides what a run computes (data, models, method, loss
parameters, schedule, sizes, seed) plus execution options (device, bf16, workers, checkpoint and
log intervals). Its hash covers only the first kind, so moving a run to another GPU or changing
its logging does not make it a new run. ``validate`` checks names, ranges and files before any
model is built, so a typo fails in a second with the accepted values, not after hours.

Recipes: ``DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root=...)`` reads the
COCO rows of the project's recipes (``ckd_lib/resources/recipes.csv``; the teacher-training and
the methods the paper does not list are in ``recipes_derived.csv``, marked as derived).
``iterations=`` shortens or lengthens a schedule with its milestones scaled in proportion, which
is also how the matched-budget comparison (every method at the same iterations) is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib.configbase import ConfigError, RunConfigBase, check_choice, show
from ckd_lib.detection.models import (
    DETECTION_BACKBONES,
    DETECTOR_KINDS,
    MAX_SIZE,
    TEST_MIN_SIZE,
    TRAIN_MIN_SIZES,
    DetectorSpec,
)
from ckd_lib.errors import InputError, MissingFileError

__all__ = ["BACKBONE_ALIASES", "DetectionConfig", "detection_methods",
           "parse_iteration_schedule"]

# The recipes' short names -> backbone names.
BACKBONE_ALIASES = {"R18": "resnet18", "R34": "resnet34", "R50": "resnet50", "R101": "resnet101",
                    "MobileNetV2": "mobilenet_v2", "MV2": "mobilenet_v2"}
AMP_MODES = ("bf16", "off")
# Where a teacher's weights come from: a checkpoint path, torchvision's COCO weights (R50 only),
# or "untrained" (tests and smoke runs only).
TEACHER_SOURCES = ("torchvision", "untrained")
_ITERS = re.compile(r"^(?P<iters>\d+)k_iters_steps(?P<steps>(_\d+k)+)$")

# Fields that do not change what a run computes (left out of the hash).
EXECUTION_FIELDS = ("device", "amp", "workers", "checkpoint_every", "log_every", "out_dir",
                    "progress", "eval_images_per_batch", "label")
# Recipe loss keys that only describe where a loss applies (kept in the config, not hashed).
DESCRIPTIVE_LOSS_KEYS = ("applied_to",)


def detection_methods() -> list[str]:
    """The detection methods a config accepts (the registry's, plugins included)."""
    from ckd_lib.methods import method_names

    return method_names("detection")


def parse_iteration_schedule(text: str) -> tuple[int, tuple[int, ...]]:
    """``"360k_iters_steps_240k_320k"`` -> ``(360000, (240000, 320000))``."""
    match = _ITERS.match(text)
    if not match:
        raise InputError(f"not an iteration schedule: {text!r} (expected e.g. "
                         "'360k_iters_steps_240k_320k')")
    steps = tuple(int(s[:-1]) * 1000 for s in match.group("steps").strip("_").split("_"))
    return int(match.group("iters")) * 1000, steps


def backbone_name(name: str) -> str:
    """A recipe alias or a backbone name -> the backbone name; unknown names raise."""
    if name in DETECTION_BACKBONES:
        return name
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]
    raise ConfigError(f"unknown detection backbone {name!r}; accepted: "
                      f"{', '.join(DETECTION_BACKBONES)} or {', '.join(BACKBONE_ALIASES)}")


@dataclass
class DetectionConfig(RunConfigBase):
    """A COCO detection (or instance segmentation) run. See the module docstring."""

    data_root: str
    student: str
    method: str = "baseline"
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    kind: str = "faster_rcnn"
    student_weights: str | None = "imagenet"
    loss: dict = field(default_factory=dict)
    iterations: int = 90000
    milestones: tuple[int, ...] = (60000, 80000)
    lr: float = 0.02
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 1000
    warmup_factor: float = 0.001
    images_per_batch: int = 16
    train_min_sizes: tuple[int, ...] = TRAIN_MIN_SIZES
    test_min_size: int = TEST_MIN_SIZE
    max_size: int = MAX_SIZE
    roi_batch_per_image: int = 512
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_limit: int | None = None
    val_limit: int | None = None
    eval_every: int = 0
    seed: int = 0
    recipe: str = ""
    # execution options
    device: str = "auto"
    amp: str = "bf16"
    workers: int = 4
    checkpoint_every: int = 5000
    log_every: int = 20
    eval_images_per_batch: int = 4
    out_dir: str = "results/coco/runs"
    label: str = "coco"
    progress: bool = False
    # What a rehearsal run stands for ({} for a real run; ckd_lib.study.rehearse)
    rehearsal: dict = field(default_factory=dict)

    TASK = "detection"
    NOT_HASHED = EXECUTION_FIELDS
    FIELD_FORMS = {"device": "'auto', 'cpu', 'cuda' or 'cuda:N'",
                   "milestones": "a list of iterations, e.g. [240000, 320000]",
                   "student_weights": "'imagenet', a classifier checkpoint file or null"}

    def __post_init__(self) -> None:
        self.milestones = tuple(self.milestones)
        self.train_min_sizes = tuple(self.train_min_sizes)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, teacher: str | None, student: str, method: str, /,
                    iterations: int | None = None, **overrides) -> DetectionConfig:
        """The recipe's schedule, lr, batch and loss parameters, then ``overrides``."""
        from ckd_lib.recipes import get_recipe

        recipe = get_recipe("coco", teacher, student, method)
        total, steps = parse_iteration_schedule(recipe.schedule_text)
        if iterations is not None:
            if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
                raise ConfigError(f"iterations={iterations!r} must be a positive integer")
            steps = tuple(max(1, round(s * iterations / total)) for s in steps)
            if iterations < total:  # a shortened schedule warms up in proportion
                overrides.setdefault("warmup_iterations", max(
                    1, round(cls.warmup_iterations * iterations / total)))
            total = iterations
        values = dict(
            student=backbone_name(student),
            method="baseline" if recipe.method == "teacher" else recipe.method,
            teacher=backbone_name(teacher) if teacher else None, iterations=total,
            milestones=steps, lr=recipe.lr, images_per_batch=recipe.batch_size,
            weight_decay=recipe.weight_decay, loss=dict(recipe.loss_params),
            recipe=f"coco:{teacher or ''}:{student}:{method}",
        )
        if teacher and backbone_name(teacher) == "resnet50":
            values["teacher_checkpoint"] = "torchvision"
        loss = overrides.pop("loss", None)
        config = cls.from_dict({**values, **overrides})
        return config.with_overrides({"loss": loss}) if loss else config

    # -- validation -------------------------------------------------------------------------
    def validate(self, check_files: bool = True) -> DetectionConfig:
        """Raise a ConfigError naming the bad value; ``check_files`` also checks that the
        teacher, the student's weights and the COCO folder exist. Returns self."""
        self._check_files = check_files
        return super().validate()

    def loss_params(self) -> dict:
        return self.method_spec.resolve({k: v for k, v in self.loss.items()
                                         if k not in DESCRIPTIVE_LOSS_KEYS})

    def _validate(self) -> None:
        check_files = getattr(self, "_check_files", True)
        self.student = backbone_name(self.student)
        if self.teacher is not None:
            self.teacher = backbone_name(self.teacher)
        check_choice("kind", self.kind, DETECTOR_KINDS)
        check_choice("method", self.method, detection_methods())
        distils = bool(self.method_spec.terms)
        if distils and self.teacher is None:
            raise ConfigError(f"method {self.method!r} needs a teacher (one of "
                              f"{', '.join(DETECTION_BACKBONES)})")
        if distils and check_files and not self.teacher_checkpoint:
            raise ConfigError(f"method {self.method!r} needs teacher_checkpoint (a file, or one "
                              f"of {TEACHER_SOURCES})")
        if not distils and self.teacher is not None:
            raise ConfigError(f"method {self.method!r} trains the detector alone; set "
                              "teacher=None")
        check_choice("amp", self.amp, AMP_MODES)
        for name in ("iterations", "images_per_batch", "warmup_iterations", "checkpoint_every",
                     "log_every", "eval_images_per_batch", "test_min_size", "max_size",
                     "roi_batch_per_image", "workers", "eval_every", "seed"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name not in ("warmup_iterations", "workers",
                                                         "eval_every", "seed")):
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if list(self.milestones) != sorted(self.milestones) or any(
                not 0 < m <= self.iterations for m in self.milestones):
            raise ConfigError(f"milestones={list(self.milestones)} must be increasing and within "
                              f"1..iterations ({self.iterations})")
        if not self.train_min_sizes or any(s < 1 for s in self.train_min_sizes):
            raise ConfigError(f"train_min_sizes={list(self.train_min_sizes)} must be a non-empty "
                              "list of positive sizes")
        if not self.lr > 0:
            raise ConfigError(f"lr={show(self.lr)} must be positive")
        if not 0 <= self.warmup_factor <= 1:
            raise ConfigError(f"warmup_factor={show(self.warmup_factor)} must be in [0, 1]")
        if not 0 < self.gamma <= 1 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(f"gamma={show(self.gamma)} must be in (0, 1], momentum="
                              f"{show(self.momentum)} in [0, 1), weight_decay="
                              f"{show(self.weight_decay)} >= 0")
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}={value!r} must be null or a positive integer")
        if self.device != "auto" and not (self.device in ("cpu", "cuda") or (
                self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"device={self.device!r} is not accepted; device must be "
                              f"{self.FIELD_FORMS['device']}")
        if self.student_weights not in (None, "imagenet") and check_files \
                and not Path(self.student_weights).is_file():
            raise MissingFileError(f"student_weights={self.student_weights!r} is not a file "
                                   "(give a classifier checkpoint, 'imagenet' or null)")
        if self.teacher_checkpoint not in (None, *TEACHER_SOURCES):
            if check_files and not Path(self.teacher_checkpoint).is_file():
                raise MissingFileError(
                    f"teacher_checkpoint={self.teacher_checkpoint!r} is not a file (give a "
                    f"detector checkpoint, e.g. one converted from Detectron2 with `python -m "
                    f"ckd_lib.detection.convert`, or one of {TEACHER_SOURCES})")
        elif self.teacher_checkpoint == "torchvision" and self.teacher != "resnet50":
            raise ConfigError(f"torchvision publishes COCO weights for resnet50 detectors only; "
                              f"teacher {self.teacher!r} needs a checkpoint file")
        if check_files:
            from ckd_lib.detection.coco import check_coco_root
            from ckd_lib.rehearsal import check_teacher

            check_teacher(self.teacher_checkpoint, self.rehearsal)

            check_coco_root(self.data_root, splits=(self.train_split, self.val_split))

    # -- identity ---------------------------------------------------------------------------
    def student_spec(self, num_classes: int) -> DetectorSpec:
        """The student's detector; trained from scratch (no student_weights) its backbone gets
        trainable BatchNorm and no frozen stages, as torchvision does without weights."""
        scratch = self.student_weights is None
        return DetectorSpec(backbone=self.student, kind=self.kind, num_classes=num_classes,
                            backbone_norm="bn" if scratch else "frozen_bn",
                            trainable_layers=5 if scratch else 3,
                            train_min_sizes=self.train_min_sizes,
                            test_min_size=self.test_min_size, max_size=self.max_size,
                            roi_batch_per_image=self.roi_batch_per_image)

    def hash_content(self) -> dict:
        """The base's content, with the COCO folder as an absolute path (the same data moved
        elsewhere is another run: the record says where its images came from)."""
        content = super().hash_content()
        content["data_root"] = str(Path(self.data_root).resolve())
        return content

    def config_hash(self) -> str:
        return super().config_hash()[:12]

    def run_id(self) -> str:
        pair = f"{self.teacher}-{self.student}" if self.teacher else self.student
        kind = "mask" if self.kind == "mask_rcnn" else "faster"
        method = self.method.replace("+", "_")
        return (f"coco-{kind}-{pair}-{method}-{self.iterations}it-s{self.seed}-"
                f"{self.config_hash()[:6]}")
