"""One classification run, described by one dataclass: what to train, from which teacher, how.

The config is the unit of bookkeeping: its hash names the run's record and checkpoint, so a run
whose record exists with the same hash is never recomputed (``ckd_lib.configbase`` says how the
hash is made). Validation happens here, before any data is loaded, so a typo fails in a second
rather than after an epoch; the methods and their loss parameters come from the method registry
(``ckd_lib.methods``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckd_lib.configbase import ConfigError, RunConfigBase, check_choice, show
from ckd_lib.data.catalog import (
    CLASSIFICATION_DATASETS,
    FOLDER_DATASETS,
    dataset_base,
    split_sizes,
)
from ckd_lib.data.registry import check_dataset_name

__all__ = ["ConfigError", "RunConfig", "load_configs", "methods"]


SCHEDULES = ("step", "cosine")
LOADERS = ("auto", "gpu", "torch", "nvjpeg")
AMP_MODES = ("auto", "bf16", "none")
SWITCHES = ("auto", True, False)

# Fields that change where things are written or how progress is shown, not what is computed.
NOT_HASHED = ("out_dir", "checkpoint_every", "progress", "label", "eval_batch_size",
              "data_seed")
# eval_batch_size became an execution option after runs had been recorded with it in their
# hash; the hash keeps the value those runs had, so their ids do not change.
LEGACY_HASHED = {"eval_batch_size": 1000}


def methods() -> list[str]:
    """The classification methods a config accepts (the registry's, plugins included)."""
    from ckd_lib.methods import method_names

    return method_names("classification")


@dataclass
class RunConfig(RunConfigBase):
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
    # `init_seed` fixes the student's initial weights (defaults to `seed`); `data_seed` fixes
    # which images a train/test subset holds, the same for every seed of a study.
    seed: int = 0
    init_seed: int | None = None
    data_seed: int = 0
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
    eval_batch_size: int = 0  # 0: chosen per device (ckd_lib.engine.speed)
    # Bookkeeping
    out_dir: str = "results/runs"
    checkpoint_every: int = 1
    progress: bool = True
    label: str = ""
    # What a rehearsal run stands for ({"dataset", "batch_size"} of the real run); {} for a real
    # run. Hashed only when set, so a rehearsal is never the run it rehearses
    # (ckd_lib.study.rehearse, ckd_lib.rehearsal).
    rehearsal: dict = field(default_factory=dict)

    TASK = "classification"
    NOT_HASHED = NOT_HASHED
    FIELD_FORMS = {"device": "'auto', 'cpu', 'cuda' or 'cuda:N'",
                   "channels_last": "'auto', true or false", "cuda_graphs": "'auto', true or false",
                   "milestones": "a list of epochs, e.g. [150, 180, 210]"}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, dataset: str, teacher: str | None, student: str, method: str, /,
                    **overrides) -> RunConfig:
        """The published recipe of one table cell, with any field overridden by keyword (also
        ``student``, ``teacher``, ``method`` or ``dataset``: the cell's recipe, applied to them).

        A method without a recipe row of its own borrows the recipe its registration names
        (``recipe_from``; ``ckd_lib.recipes.get_recipe``).
        """
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
        return cls.from_dict(base).with_overrides(overrides)

    # -- derived --------------------------------------------------------------------------
    @property
    def dataset_base(self) -> str:
        """The dataset name without parameters ("synthetic:num_classes=5" -> "synthetic")."""
        return dataset_base(self.dataset)

    @property
    def model_zoo(self) -> str:
        """"imagenet" for the full-resolution datasets, "cifar" for the 32x32 ones."""
        return "imagenet" if self.dataset_base in FOLDER_DATASETS else "cifar"

    @property
    def effective_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def uses_subsets(self) -> bool:
        return bool(self.train_subset or self.test_subset)

    def hash_content(self) -> dict:
        """Every field that changes what is computed; see ``ckd_lib.configbase``. ``data_seed``
        counts only when a subset is drawn (it changes nothing else), so runs on whole datasets
        keep the ids they had before the field existed."""
        data = super().hash_content()
        data["init_seed"] = self.effective_init_seed
        data.update(LEGACY_HASHED)
        if self.uses_subsets:
            data["data_seed"] = self.data_seed
        return data

    def run_id(self) -> str:
        """A readable, unique directory name: dataset, pair, method, seed, hash prefix."""
        teacher = self.teacher or "none"
        method = self.method.replace("+", "_")
        return (f"{self.dataset_base}-{teacher}-{self.student}-{method}-s{self.seed}"
                f"-{self.config_hash()[:10]}")

    # -- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        from ckd_lib.models import list_models

        check_choice("method", self.method, methods())
        check_choice("dataset", self.dataset_base, CLASSIFICATION_DATASETS)
        check_dataset_name(self.dataset)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loader", self.loader, LOADERS)
        check_choice("amp", self.amp, AMP_MODES)
        check_choice("channels_last", self.channels_last, SWITCHES)
        check_choice("cuda_graphs", self.cuda_graphs, SWITCHES)
        zoo_models = list_models(self.model_zoo)
        check_choice("student", self.student, zoo_models)
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("seed", "data_seed", "num_workers", "eval_batch_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be an integer >= 0")
        if self.init_seed is not None and self.init_seed < 0:
            raise ConfigError(f"init_seed={self.init_seed!r} must be an integer >= 0 or null")
        if not self.lr > 0:
            raise ConfigError(f"lr={show(self.lr)} must be positive")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum={show(self.momentum)} must be in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={show(self.weight_decay)} must be a number >= 0")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay={show(self.lr_decay)} must be in (0, 1]")
        if self.schedule == "step":
            ms = list(self.milestones)
            if ms != sorted(ms) or any(m < 1 or m > self.epochs for m in ms):
                raise ConfigError(
                    f"milestones={ms} must be increasing epochs within 1..{self.epochs}")
        self._validate_sizes()
        if self.device != "auto" and not (self.device == "cpu" or self.device == "cuda" or (
                self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"device={self.device!r} is not accepted; device must be "
                              f"{self.FIELD_FORMS['device']}")
        if self.loader == "gpu" and self.model_zoo == "imagenet":
            raise ConfigError(f"loader='gpu' holds 32x32 datasets only; {self.dataset} accepts "
                              "'auto', 'torch' or 'nvjpeg'")
        if self.loader == "nvjpeg" and self.model_zoo != "imagenet":
            raise ConfigError(f"loader='nvjpeg' decodes JPEG folders (imagenet, places365); "
                              f"{self.dataset} accepts 'auto', 'gpu' or 'torch'")
        self._validate_teacher(zoo_models)

    def _validate_sizes(self) -> None:
        """Subsets and the batch against the dataset's size, where it is known."""
        sizes = split_sizes(self.dataset)
        for name, index in (("train_subset", 0), ("test_subset", 1)):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer or null")
            if value is not None and sizes is not None and value > sizes[index]:
                raise ConfigError(f"{name}={value} is larger than the {self.dataset} "
                                  f"{'training' if index == 0 else 'test'} set "
                                  f"({sizes[index]} images)")
        train_size = self.train_subset or (sizes[0] if sizes else None)
        if train_size is not None and self.batch_size > train_size:
            raise ConfigError(f"batch_size={self.batch_size} is larger than the training set "
                              f"({train_size} images)")

    def _validate_teacher(self, zoo_models: list[str]) -> None:
        if not self.method_spec.needs_teacher:
            if self.teacher is not None:
                raise ConfigError(f"method {self.method} trains without a teacher; got "
                                  f"teacher={self.teacher!r} (set teacher: null)")
            return
        if self.teacher is None:
            raise ConfigError(f"method {self.method} needs a teacher; choose one of {zoo_models}")
        check_choice("teacher", self.teacher, zoo_models)
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
        from ckd_lib.rehearsal import check_teacher

        check_teacher(self.teacher_checkpoint, self.rehearsal)


def load_configs(path: str | Path) -> list[RunConfig]:
    """A YAML file holding one config mapping, or a list of them (students trained together)."""
    return RunConfig.from_yaml(path)
