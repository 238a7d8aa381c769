"""The geometry of the ImageNet transforms, applied to decoded uint8 tensors on any device.

Why: the GPU-decoding loader (:mod:`ckd_lib.data.nvjpeg_loader`) must crop, flip and resize
exactly as the PIL path (:func:`~ckd_lib.data.imagefolder.imagenet_transform`) does, so that a
run can switch loaders without changing what it trains on. Rather than restating that recipe,
the geometry is read from the dataset's own transform objects: the crop boxes come from the
same ``RandomResizedCrop.get_params`` call under the same per-sample seed, so they are
bit-equal, and the flip from the same ``torch.rand(1) < p`` draw after it. Only the pixel
arithmetic differs: torch's antialiased bilinear resize against PIL's, which agree to within one
grey level (measured in ``tests/test_gpu_decode.py``).

A training batch applies its crops one image at a time (every box has its own size), from
Python, 512 times per batch; so the per-image work is kept to a slice, one float conversion,
one ``interpolate`` and the flip, and the rounding to whole grey levels that PIL's uint8 output
implies is done once for the batch (:func:`normalise_batch`).

Splitting *plan* (random draws, on the CPU, in a DataLoader worker, from the image header
only) from *apply* (tensor ops on the decoded image, on the loader's device) is what lets the
workers skip decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision import transforms as T

from .seeding import seeded_default_generator

# (top, left, height, width, flip) of one training sample; None for the evaluation geometry.
Plan = tuple[int, int, int, int, bool]


@dataclass(frozen=True)
class TrainGeometry:
    """RandomResizedCrop then RandomHorizontalFlip, with the transform's own parameters."""

    crop: T.RandomResizedCrop
    flip: T.RandomHorizontalFlip
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(self.crop.size)

    def plan(self, image, sample_seed: int | None) -> Plan:
        """The crop box and flip of one sample; ``image`` needs only a size (a lazily opened
        PIL image is enough). Same draws, in the same order, as the PIL path's transform."""
        if sample_seed is None:
            raise ValueError("the training geometry draws random crops: it needs a sample seed")
        with seeded_default_generator(sample_seed):
            top, left, height, width = self.crop.get_params(image, self.crop.scale,
                                                            self.crop.ratio)
            flipped = bool(torch.rand(1) < self.flip.p)
        return int(top), int(left), int(height), int(width), flipped

    def apply(self, image: torch.Tensor, plan: Plan) -> torch.Tensor:
        """uint8 ``[3, H, W]`` -> float32 ``[3, *output_size]`` in 0..255, not yet rounded, on
        the image's device. What ``TF.resized_crop`` + ``TF.hflip`` compute, with fewer ops.
        Antialiased whatever the transform says: PIL, the reference, always antialiases."""
        top, left, height, width, flipped = plan
        box = image[:, top:top + height, left:left + width].unsqueeze(0).float()
        out = F.interpolate(box, size=self.output_size, mode="bilinear", align_corners=False,
                            antialias=True)[0]
        return out.flip(-1) if flipped else out


@dataclass(frozen=True)
class EvalGeometry:
    """Resize (shorter side) then CenterCrop, with the transform's own parameters."""

    resize: T.Resize
    crop: T.CenterCrop
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(self.crop.size)

    def plan(self, image, sample_seed: int | None) -> None:
        """Nothing is random in evaluation."""
        return None

    def apply(self, image: torch.Tensor, plan: None = None) -> torch.Tensor:
        """uint8 ``[3, H, W]`` -> uint8 ``[3, *output_size]`` (torchvision's own tensor ops:
        the shorter-side arithmetic of Resize is theirs; evaluation is not the hot path)."""
        resized = TF.resize(image, self.resize.size, self.resize.interpolation,
                            self.resize.max_size, antialias=True)
        return TF.center_crop(resized, list(self.crop.size))


Geometry = TrainGeometry | EvalGeometry

_TRAIN = (T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize)
_EVAL = (T.Resize, T.CenterCrop, T.ToTensor, T.Normalize)


def geometry_of(transform) -> Geometry:
    """The geometry of an ImageNet-style transform (the two :func:`imagenet_transform` builds).

    Raises ValueError for any other transform: a loader that silently did something else than
    the PIL path would train on different data than the run's record says.
    """
    steps = list(getattr(transform, "transforms", []))
    kinds = tuple(type(step) for step in steps)
    if kinds not in (_TRAIN, _EVAL):
        names = [type(step).__name__ for step in steps] or [type(transform).__name__]
        raise ValueError(
            f"GPU decoding reproduces Compose(RandomResizedCrop, RandomHorizontalFlip, ToTensor, "
            f"Normalize) or Compose(Resize, CenterCrop, ToTensor, Normalize); this dataset's "
            f"transform is {names}")
    first, second, _, normalize = steps
    if first.interpolation != T.InterpolationMode.BILINEAR:
        raise ValueError(f"GPU decoding resizes bilinearly (as the ImageNet transforms do); this "
                         f"dataset's {type(first).__name__} uses {first.interpolation.value}")
    mean = tuple(float(m) for m in normalize.mean)
    std = tuple(float(s) for s in normalize.std)
    if kinds == _TRAIN:
        return TrainGeometry(first, second, mean, std)
    return EvalGeometry(first, second, mean, std)


def normalise_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, 3, H, W]`` in 0..255 -> normalised, in place (memory format kept): rounded
    to whole grey levels and clipped, as PIL's uint8 output is, then the float ops of ToTensor +
    Normalize in their order (divide by 255, subtract the mean, divide by the std). ``mean`` and
    ``std`` are float32 ``[1, 3, 1, 1]`` tensors on the images' device (made once: building them
    from Python floats for every batch would copy from pageable memory and wait for the GPU)."""
    return images.round_().clamp_(0, 255).div_(255).sub_(mean).div_(std)


def channel_constants(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``values`` as float32 ``[1, C, 1, 1]`` on ``device``, for :func:`normalise_batch`."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).to(device)
