"""Per-epoch scalars of a recipe: the learning rate and the warm-up factor of a distillation term.

Both are pure functions of the (0-based) epoch so that a resumed run computes exactly what an
uninterrupted one would, and so that tests can compare them with the reference formulas.
"""

from __future__ import annotations

import math

from ckd_lib.config import RunConfig


def learning_rate(config: RunConfig, epoch: int) -> float:
    """The lr used throughout 0-based `epoch`.

    step:   lr · decay^(number of milestones m with epoch+1 > m), mdistiller's adjust_learning_rate
            with its 1-based epoch (so with milestone 150 the 151st epoch is the first decayed one).
    cosine: lr · ½(1 + cos(π·epoch/epochs)), i.e. CosineAnnealingLR(T_max=epochs, eta_min=0)
            stepped once per epoch, as the CKD code does; the first epoch uses the base lr.
    """
    if config.schedule == "step":
        passed = sum(1 for m in config.milestones if epoch + 1 > m)
        return config.lr * config.lr_decay**passed
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs))
    raise ValueError(f"unknown schedule {config.schedule!r}; accepted: 'step', 'cosine'")


def warmup_factor(warmup_epochs: int | None, epoch: int) -> float:
    """min((epoch+1)/warmup, 1): mdistiller's linear warm-up with its 1-based epoch; 1 if none."""
    if not warmup_epochs:
        return 1.0
    return min((epoch + 1) / warmup_epochs, 1.0)
