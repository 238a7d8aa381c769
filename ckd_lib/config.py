"""One run, described by one dataclass: what to train, from which teacher, with which recipe.

The config is the unit of bookkeeping: its hash names the run's record and checkpoint, so a run
whose record exists with the same hash is never recomputed. Validation happens here, before any
data is loaded, so a typo fails in a second rather than after an epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ckd_lib.fields import check_known_fields

METHODS = ("CE", "KD", "DKD", "CKD", "CKD+ReviewKD", "KD+CKD")
DATASETS = ("cifar100", "cifar10", "fashion_mnist", "synthetic", "imagenet", "places365")
# Full-resolution datasets read from image folders; they use the ImageNet model zoo.
FOLDER_DATASETS = ("imagenet", "places365")
SCHEDULES = ("step", "cosine")
LOADERS = ("auto", "gpu", "torch", "nvjpeg")
AMP_MODES = ("auto", "bf16", "none")
SWITCHES = ("auto", True, False)
CKD_NEGATIVES = ("teacher", "student")
NEGATIVES_SCOPES = ("local", "global")

# Loss parameters each method accepts, with their defaults. The defaults are the mdistiller/CKD
# values for CIFAR-100; recipes override them cell by cell (see ckd_lib.recipes).
_CKD_DEFAULTS = {
    "cl_weight": 10.0,
    "temperature": 1.0,
    "negatives": "teacher",
    "symmetric": False,
    "positive_only": False,
    "chunk_size": None,
    "learnable_temperature": False,
    # Under DDP: contrast within each GPU's slice ("local", the authors' DataParallel behaviour)
    # or against the whole global batch ("global", all-gather). No effect in one process.
    "negatives_scope": "local",
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "CE": {"ce_weight": 1.0},
    "KD": {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0},
    "DKD": {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20},
    "CKD": {"ce_weight": 1.0, **_CKD_DEFAULTS},
    "CKD+ReviewKD": {"ce_weight": 1.0, **_CKD_DEFAULTS, "reviewkd_weight": 1.0,
                     "warmup_epochs": 20},
    "KD+CKD": {"ce_weight": 0.1, "kd_weight": 0.9, "kd_temperature": 4.0, **_CKD_DEFAULTS},
}

# Fields that change where things are written or how progress is shown, not what is computed.
NOT_HASHED = ("out_dir", "checkpoint_every", "progress", "label")


class ConfigError(ValueError):
    """A config value that no run can use; the message names the value and what is accepted."""


@dataclass
class RunConfig:
    """Everything that determines one training run of one student (or one teacher, method CE)."""

    student: str
    method: str = "CKD"
    dataset: str = "cifar100"
    teacher: str | None = None
    # Path to an mdistiller-style checkpoint; "torchvision" for torchvision's pretrained ImageNet
    # weights; or "untrained" for a randomly initialised teacher (benchmarks and tests only).
    teacher_checkpoint: str | None = None
    loss: dict = field(default_factory=dict)
    # Recipe
    epochs: int = 240
    lr: float = 0.05
    schedule: str = "step"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    batch_size: int = 64
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # Seeds: `seed` fixes the data order and augmentation (shared by students trained together);
    # `init_seed` fixes the student's initial weights (defaults to `seed`).
    seed: int = 0
    init_seed: int | None = None
    # Data
    data_root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    drop_last: bool = False
    # Execution and speed options; "auto" is resolved by ckd_lib.engine.speed and recorded.
    device: str = "auto"
    loader: str = "auto"
    num_workers: int = 2
    amp: str = "auto"
    channels_last: Any = "auto"
    cuda_graphs: Any = "auto"
    eval_batch_size: int = 1000
    # Bookkeeping
    out_dir: str = "results/runs"
    checkpoint_every: int = 1
    progress: bool = True
    label: str = ""

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        check_known_fields(cls, data, "config field(s)", ConfigError)
        if "student" not in data:
            raise ConfigError("config needs a 'student' model name")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data)}")
        return cls.from_dict(data)

    @classmethod
    def from_recipe(cls, dataset: str, teacher: str | None, student: str, method: str,
                    **overrides) -> RunConfig:
        """The published recipe of one table cell, with any field overridden by keyword."""
        from ckd_lib.recipes import get_recipe

        recipe = get_recipe(dataset, teacher, student, method)
        method_name = "CE" if recipe.method == "teacher" else recipe.method
        base = {
            "student": student,
            "method": method_name,
            "dataset": dataset,
            "teacher": teacher if method_name != "CE" else None,
            "loss": dict(recipe.loss_params),
            "epochs": recipe.epochs,
            "lr": recipe.lr,
            "schedule": recipe.schedule,
            "milestones": list(recipe.milestones),
            "lr_decay": recipe.lr_decay or 0.1,
            "batch_size": recipe.batch_size,
            "weight_decay": recipe.weight_decay,
        }
        if dataset in FOLDER_DATASETS:
            base["num_workers"] = 8  # JPEG decoding needs more than CIFAR's 2 workers
            if dataset == "imagenet" and method_name != "CE":
                base["teacher_checkpoint"] = "torchvision"  # the paper's ImageNet teachers
        loss_overrides = overrides.pop("loss", None) or {}
        base["loss"].update(loss_overrides)
        base.update(overrides)
        return cls.from_dict(base)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- derived --------------------------------------------------------------------------
    def loss_params(self) -> dict:
        """The method's defaults updated with this config's `loss` entries.

        Real-valued parameters are made floats, so `cl_weight: 100` (as recipes.csv writes it)
        and `cl_weight: 100.0` are the same run with the same hash.
        """
        params = {**METHOD_DEFAULTS[self.method], **self.loss}
        for key, value in params.items():
            if _is_real_parameter(key) and isinstance(value, int) and not isinstance(value, bool):
                params[key] = float(value)
        return params

    @property
    def dataset_base(self) -> str:
        """The dataset name without parameters ("synthetic:num_classes=5" -> "synthetic")."""
        return self.dataset.split(":", 1)[0]

    @property
    def model_zoo(self) -> str:
        """"imagenet" for the full-resolution datasets, "cifar" for the 32x32 ones."""
        return "imagenet" if self.dataset_base in FOLDER_DATASETS else "cifar"

    @property
    def effective_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    def config_hash(self) -> str:
        """sha256 over the fields that change what is computed (loss defaults made explicit)."""
        data = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED}
        data["loss"] = self.loss_params()
        data["init_seed"] = self.effective_init_seed
        canon = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(canon.encode()).hexdigest()

    def run_id(self) -> str:
        """A readable, unique directory name: dataset, pair, method, seed, hash prefix."""
        teacher = self.teacher or "none"
        method = self.method.replace("+", "_")
        return (f"{self.dataset_base}-{teacher}-{self.student}-{method}-s{self.seed}"
                f"-{self.config_hash()[:10]}")

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> RunConfig:
        """Raise ConfigError on any value no run can use. Cheap: loads no data, builds no model."""
        from ckd_lib.models import list_models

        def check_choice(name, value, accepted):
            if value not in accepted:
                raise ConfigError(
                    f"{name}={value!r} is not accepted; choose one of {list(accepted)}")

        check_choice("method", self.method, METHODS)
        check_choice("dataset", self.dataset_base, DATASETS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loader", self.loader, LOADERS)
        check_choice("amp", self.amp, AMP_MODES)
        check_choice("channels_last", self.channels_last, SWITCHES)
        check_choice("cuda_graphs", self.cuda_graphs, SWITCHES)
        zoo_models = list_models(self.model_zoo)
        check_choice("student", self.student, zoo_models)
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be positive")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum={self.momentum!r} must be in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay={self.lr_decay!r} must be in (0, 1]")
        if self.schedule == "step":
            ms = list(self.milestones)
            if ms != sorted(ms) or any(m < 1 or m > self.epochs for m in ms):
                raise ConfigError(
                    f"milestones={ms} must be increasing epochs within 1..{self.epochs}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r} must be a positive integer or None")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r}; accepted: 'auto', 'cpu', 'cuda', 'cuda:N'")
        if self.loader == "gpu" and self.model_zoo == "imagenet":
            raise ConfigError(f"loader='gpu' holds 32x32 datasets only; {self.dataset} accepts "
                              "'auto', 'torch' or 'nvjpeg'")
        if self.loader == "nvjpeg" and self.model_zoo != "imagenet":
            raise ConfigError(f"loader='nvjpeg' decodes JPEG folders (imagenet, places365); "
                              f"{self.dataset} accepts 'auto', 'gpu' or 'torch'")
        self._validate_teacher(zoo_models)
        self._validate_loss()
        return self

    def _validate_teacher(self, zoo_models: list[str]) -> None:
        if self.method == "CE":
            if self.teacher is not None:
                raise ConfigError(
                    f"method CE trains without a teacher; got teacher={self.teacher!r}")
            return
        if self.teacher is None:
            raise ConfigError(f"method {self.method} needs a teacher; choose one of {zoo_models}")
        if self.teacher not in zoo_models:
            raise ConfigError(f"teacher={self.teacher!r} is not accepted; choose one of "
                              f"{zoo_models}")
        if self.teacher_checkpoint is None:
            raise ConfigError(
                f"teacher {self.teacher} has no checkpoint: set teacher_checkpoint to a trained "
                "checkpoint (e.g. <name>_vanilla/ckpt_epoch_240.pth, or a teacher run's "
                "model_last.pth), or 'torchvision' for torchvision's pretrained ImageNet weights; "
                "'untrained' is accepted for benchmarks only")
        if self.teacher_checkpoint == "torchvision":
            if self.model_zoo != "imagenet":
                raise ConfigError("teacher_checkpoint='torchvision' (pretrained ImageNet weights) "
                                  f"applies to imagenet/places365, not {self.dataset}")
            return
        if self.teacher_checkpoint != "untrained" and not Path(self.teacher_checkpoint).is_file():
            raise ConfigError(f"teacher_checkpoint={self.teacher_checkpoint!r}: no such file")

    def _validate_loss(self) -> None:
        accepted = METHOD_DEFAULTS[self.method]
        unknown = sorted(set(self.loss) - set(accepted))
        if unknown:
            raise ConfigError(f"loss parameter(s) {unknown} do not apply to method {self.method}; "
                              f"accepted: {sorted(accepted)}")
        params = self.loss_params()
        for key, value in params.items():
            if _is_real_parameter(key):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"loss.{key}={value!r} must be a non-negative number")
        for key in ("temperature", "kd_temperature"):
            if key in params and not params[key] > 0:
                raise ConfigError(f"loss.{key}={params[key]!r} must be positive")
        if "negatives_scope" in params and params["negatives_scope"] not in NEGATIVES_SCOPES:
            raise ConfigError(f"loss.negatives_scope={params['negatives_scope']!r} is not "
                              f"accepted; choose one of {list(NEGATIVES_SCOPES)}")
        if "negatives" in params and params["negatives"] not in CKD_NEGATIVES:
            raise ConfigError(f"loss.negatives={params['negatives']!r} is not accepted; choose one "
                              f"of {list(CKD_NEGATIVES)}")
        for key in ("symmetric", "positive_only", "learnable_temperature"):
            if key in params and not isinstance(params[key], bool):
                raise ConfigError(f"loss.{key}={params[key]!r} must be true or false")
        chunk = params.get("chunk_size")
        if chunk is not None and (not isinstance(chunk, int) or chunk < 2):
            raise ConfigError(f"loss.chunk_size={chunk!r} must be an integer >= 2 or None")
        warmup = params.get("warmup_epochs")
        if warmup is not None and (not isinstance(warmup, int) or warmup < 0):
            raise ConfigError(f"loss.warmup_epochs={warmup!r} must be a non-negative integer")


def _is_real_parameter(key: str) -> bool:
    """Loss parameters that are real numbers (weights, temperatures, DKD's alpha and beta)."""
    return (key.endswith(("_weight", "temperature")) and key != "learnable_temperature") or \
        key in ("alpha", "beta")


def load_configs(path: str | Path) -> list[RunConfig]:
    """A YAML file holding one config mapping, or a list of them (students trained together)."""
    data = yaml.safe_load(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    return [RunConfig.from_dict(item) for item in items]
