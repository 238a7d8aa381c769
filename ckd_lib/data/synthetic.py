"""A small generated CIFAR-shaped dataset whose classes a CNN can actually learn.

Why: tests and CPU smoke runs need data that exists everywhere, is identical on every machine,
and on which training visibly improves accuracy. Each class has a smooth random colour template
(a 4x4 grid upsampled to 32x32, so it survives random crops and flips); a sample is its class
template plus per-pixel Gaussian noise. Train and test draw from the same templates with
independent noise and labels. The content depends only on the parameters below, not on the
training seed, so every seed of a study sees the same data (like CIFAR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ckd_lib.errors import InputError

from .dataset import ImageDataset
from .seeding import derive_seed

DEFAULTS = {"num_classes": 10, "num_train": 1000, "num_test": 200, "noise": 0.5, "data_seed": 0}

_SPLIT_STREAM = {"train": 1, "test": 2}
_TEMPLATE_STREAM = 0
_AMPLITUDE = 48.0  # grey levels per unit of template / noise


def _templates(num_classes: int, data_seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(data_seed, _TEMPLATE_STREAM, num_classes))
    coarse = torch.randn(num_classes, 3, 4, 4, generator=g, dtype=torch.float64)
    return F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def _split(
    split: str, n: int, num_classes: int, noise: float, data_seed: int, templates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(derive_seed(data_seed, _SPLIT_STREAM[split], num_classes))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    noise_t = torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)
    x = 128.0 + _AMPLITUDE * (templates[labels] + noise * noise_t)
    return x.round().clamp(0, 255).to(torch.uint8).contiguous(), labels


def make_synthetic(split: str, **params) -> ImageDataset:
    """Build one split. Parameters (all optional): ``num_classes`` (10), ``num_train`` (1000),
    ``num_test`` (200), ``noise`` (0.5, relative to the template contrast), ``data_seed`` (0).

    ``mean``/``std`` are the per-channel statistics of the train split of the same parameters.
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise InputError(
            f"unknown synthetic parameter(s) {sorted(unknown)}; accepted: {sorted(DEFAULTS)}"
        )
    p = {**DEFAULTS, **params}
    num_classes, noise, data_seed = int(p["num_classes"]), float(p["noise"]), int(p["data_seed"])
    sizes = {"train": int(p["num_train"]), "test": int(p["num_test"])}
    if num_classes < 1 or min(sizes.values()) < 1:
        raise InputError(f"synthetic needs num_classes >= 1 and sizes >= 1, got {p}")
    templates = _templates(num_classes, data_seed)
    train_x, train_y = _split("train", sizes["train"], num_classes, noise, data_seed, templates)
    scaled = train_x.double() / 255.0
    mean = tuple(scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(scaled.std(dim=(0, 2, 3), unbiased=False).tolist())
    if split == "train":
        x, y = train_x, train_y
    else:
        x, y = _split(split, sizes[split], num_classes, noise, data_seed, templates)
    tag = ",".join(f"{k}={p[k]}" for k in sorted(p) if p[k] != DEFAULTS[k])
    return ImageDataset(
        images=x,
        labels=y,
        num_classes=num_classes,
        mean=mean,
        std=std,
        name=f"synthetic:{tag}" if tag else "synthetic",
        split=split,
        classes=tuple(f"class_{i}" for i in range(num_classes)),
    )
