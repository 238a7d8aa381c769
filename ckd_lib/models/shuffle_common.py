"""Channel shuffle, shared by ShuffleNetV1 and V2."""

from __future__ import annotations

import torch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, g, C/g, H, W] -> swap the two channel axes -> [N, C, H, W].

    Interleaves the channels of the ``groups`` groups so the next grouped conv sees all of them.
    """
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
