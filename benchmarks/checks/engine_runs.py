"""Short training runs through the engine itself, with what the device check needs to see.

Why the engine and not a hand-written step: the figures are meant to predict what
``python -m ckd_lib.train`` will do, so the step, the loader wiring and the per-epoch host syncs
are the engine's. Two additions, for measuring only:

- ``resident=True`` replaces the training loader by one batch of random tensors already on the
  device, yielded as many times per epoch as the real loader has batches: the step alone, the
  ceiling any loader can reach;
- the CUDA-graph wrapper is counted (captures and replays), so a capture check can tell "ran
  and replayed the graph" from "ran eagerly".
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import torch

from ckd_lib.config import RunConfig
from ckd_lib.data.epochs import EpochCounter
from ckd_lib.engine import trainer
from ckd_lib.engine.speed import GraphedStep


class ResidentBatches(EpochCounter):
    """``batches`` copies of one random batch of ``shape`` on ``device``; the loader interface."""

    def __init__(self, shape: tuple[int, ...], batches: int, device: torch.device,
                 channels_last: bool, num_classes: int) -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(shape, generator=generator, device=device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, num_classes, (shape[0],), generator=generator, device=device)
        self.batches = int(batches)
        self.device = device

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._start_epoch()
        return iter([(self.x, self.y)] * self.batches)


class MeasuredTrainer(trainer.GroupTrainer):
    """The engine's GroupTrainer, optionally on resident batches; keeps its loaders."""

    def __init__(self, configs: list[RunConfig], resident: bool = False) -> None:
        super().__init__(configs)
        self.resident = resident
        self.log = lambda line: None

    def _load_data(self) -> None:
        super()._load_data()
        if self.resident:
            size = self.train_set.crop_size
            self.train_loader = ResidentBatches(
                (self.per_device_batch, 3, size, size), len(self.train_loader), self.device,
                self.speed["channels_last"], self.train_set.num_classes)


class CountingGraphedStep(GraphedStep):
    """GraphedStep that counts captures and replays (every instance is kept in ``made``)."""

    made: list[CountingGraphedStep] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replays = 0
        CountingGraphedStep.made.append(self)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__call__(x, y)
        if self.graph is not None and x.shape == self.static_x.shape:
            self.replays += 1


def imagenet_config(teacher: str, student: str, **overrides) -> RunConfig:
    """The ImageNet ResNet34 -> ResNet18 CKD recipe with another pair (a dry run's smaller one)
    and ``overrides``; the teacher is untrained (no weights to download)."""
    recipe = RunConfig.from_recipe("imagenet", "ResNet34", "ResNet18", "CKD",
                                   teacher_checkpoint="untrained", progress=False,
                                   out_dir="unused").to_dict()
    return RunConfig.from_dict({**recipe, "teacher": teacher, "student": student, **overrides})


def train_once(config: RunConfig, resident: bool = False, count_graphs: bool = False):
    """Run ``config`` (its out_dir replaced by a temporary folder); (record, trainer)."""
    with tempfile.TemporaryDirectory() as out_dir:
        config = RunConfig.from_dict({**config.to_dict(), "out_dir": out_dir}).validate()
        run = MeasuredTrainer([config], resident=resident)
        if count_graphs:
            CountingGraphedStep.made.clear()
            saved = trainer.GraphedStep
            trainer.GraphedStep = CountingGraphedStep
            try:
                (record,) = run.run()
            finally:
                trainer.GraphedStep = saved
        else:
            (record,) = run.run()
    return record, run


def steady_images_per_s(record: dict) -> float:
    """Training images per second over every epoch but the first (start-up, cuDNN autotuning,
    worker start, graph capture), or over the only epoch."""
    history = record["history"]
    steady = history[1:] if len(history) > 1 else history
    seconds = sum(h["train_seconds"] for h in steady)
    return sum(h["train_images"] for h in steady) / seconds if seconds > 0 else float("nan")

