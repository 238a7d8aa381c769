"""The interface every zoo model implements (see docs/CONTRACTS.md, "Models").

Why one base class: the training engine calls ``model(x)`` for logits (the cheap path that
``torch.compile`` and CUDA graphs capture) and ``model.forward_features(x)`` when a loss needs
intermediate features (ReviewKD, feature-level ablations). Both must run the *same* code, so
``forward`` is defined once here as "the logits of ``forward_features``"; under ``torch.compile``
the unused feature tensors are dead code and cost nothing.

Feature lists follow mdistiller's per-architecture lists exactly (its ReviewKD consumes them):
``feats`` is the stem output followed by each stage's output, ``preact_feats`` the same before the
stage's final ReLU, ``pooled_feat`` the ``[B, D]`` vector the classifier reads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["FeatureModel", "feature_dict", "run_stage"]


def feature_dict(
    feats: list[torch.Tensor], preact_feats: list[torch.Tensor], pooled: torch.Tensor
) -> dict:
    """Assemble the feature dictionary returned by ``forward_features``."""
    return {"feats": feats, "preact_feats": preact_feats, "pooled_feat": pooled}


def run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage of residual blocks, returning the last block's ``(output, pre-activation)``.

    Every block of a stage runs its ordinary ``forward`` except the last, whose
    ``forward_preact`` also exposes the sum before the final ReLU. This avoids a second pass
    (and the mdistiller trick of ``is_last`` flags that make blocks return tuples).
    """
    last = len(stage) - 1
    for i, block in enumerate(stage):
        if i == last:
            return block.forward_preact(x)
        x = block(x)
    raise ValueError("empty stage")


class FeatureModel(nn.Module):
    """Base class: subclasses implement ``forward_features`` and set ``_stage_channels``."""

    _stage_channels: tuple[int, ...] = ()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Return ``(logits, feats)``; see the module docstring for the dictionary."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` only (unlike mdistiller, which returns a tuple)."""
        return self.forward_features(x)[0]

    def stage_channels(self) -> list[int]:
        """Channel counts of ``forward_features(x)[1]["feats"]``, in order."""
        return list(self._stage_channels)

    def get_stage_channels(self) -> list[int]:
        """mdistiller's name for :meth:`stage_channels` (kept so ported code runs unchanged)."""
        return self.stage_channels()


def init_he_normal_fan_out(model: nn.Module) -> None:
    """The initialisation RepDistiller's VGG and MobileNetV2 share, applied in module order.

    Convolutions: normal(0, sqrt(2 / (k*k*out_channels))), biases 0; BatchNorm: weight 1, bias 0;
    Linear: normal(0, 0.01), bias 0. The order of the draws is the modules' order, so a seed gives
    the same initial weights as their code.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
