"""A learnable contrastive temperature tau for the "tau learnable" ablation of CKD.

Why this shape: tau must stay strictly positive whatever the optimiser does, and must not be
clamped with a data-dependent branch (CUDA graphs). We therefore learn ``log(tau - min_value)``
and return ``min_value + exp(log_param)``: positive by construction, smooth, with a floor that
prevents the collapse tau -> 0 (CLIP bounds its logit scale the same way, at 1/tau <= 100).

The trainer puts ``module.parameters()`` in its optimiser. Exclude it from weight decay:
decay on the log-parameter would pull tau towards ``min_value + 1`` regardless of the loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnableTemperature(nn.Module):
    """``forward()`` returns a positive 0-d tensor tau = min_value + exp(log_param).

    Args:
        init: the initial tau; must be larger than ``min_value``.
        min_value: the floor tau can approach but never reach (>= 0).
    """

    def __init__(self, init: float = 1.0, min_value: float = 0.01) -> None:
        super().__init__()
        if not (math.isfinite(min_value) and min_value >= 0.0):
            raise ValueError(f"min_value must be a finite number >= 0; got {min_value!r}")
        if not (math.isfinite(init) and init > min_value):
            raise ValueError(
                f"init must be a finite number larger than min_value={min_value!r}; got {init!r}"
            )
        self.min_value = float(min_value)
        self.log_offset = nn.Parameter(torch.tensor(math.log(init - min_value)))

    def forward(self) -> torch.Tensor:
        return self.log_offset.exp() + self.min_value

    def extra_repr(self) -> str:
        return f"min_value={self.min_value}"
