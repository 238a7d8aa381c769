"""The training engine: objectives, optimizer, schedule, the graph-captured step and the loop."""

from ckd_lib.engine.stop import RunInterrupted
from ckd_lib.engine.trainer import GroupTrainer, train

__all__ = ["GroupTrainer", "RunInterrupted", "train"]
