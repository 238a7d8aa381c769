"""``make_loader``: pick the input pipeline by name, so configs and notebooks can switch it.

Why two pipelines: "gpu" is the fast one the study trains with; "torch" reproduces the authors'
DataLoader path for speed and accuracy comparisons.
"""

from __future__ import annotations

import torch

from .dataset import ImageDataset
from .gpu_loader import GpuLoader
from .torch_loader import TorchLoader

LOADER_KINDS = ("gpu", "torch")


def make_loader(
    kind: str,
    dataset: ImageDataset,
    batch_size: int,
    train: bool,
    seed: int,
    *,
    device: str | torch.device | None = None,
    num_workers: int = 2,
    drop_last: bool = False,
    **kwargs,
) -> GpuLoader | TorchLoader:
    """Build a loader of ``kind`` ("gpu" or "torch").

    ``device`` is used by "gpu" (default: CUDA when available, else CPU) and ignored by "torch",
    which yields CPU tensors. ``num_workers`` is used by "torch" only. ``kwargs`` go to the
    loader (e.g. ``channels_last``/``dtype`` for "gpu").
    """
    if kind == "gpu":
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return GpuLoader(dataset, batch_size, train, device, seed, drop_last, **kwargs)
    if kind == "torch":
        return TorchLoader(dataset, batch_size, train, seed, num_workers, drop_last, **kwargs)
    raise ValueError(f"unknown loader kind {kind!r}; accepted: {', '.join(LOADER_KINDS)}")
