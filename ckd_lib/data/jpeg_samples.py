"""What a DataLoader worker does for the GPU-decoding loader: read bytes, plan, route.

Why: decoding is what makes the PIL path slow (about 85 ImageNet JPEGs per second per core), so
the workers do not decode. For each ``(index, sample_seed)`` key a worker reads the file's bytes,
opens its header with PIL (no pixels are decoded) to learn the size, format and colour mode,
draws the sample's crop and flip from that size (:mod:`ckd_lib.data.folder_geometry`), and
routes the sample:

- a JPEG whose PIL mode is "RGB" (the YCbCr JPEGs that are nearly all of ImageNet) travels as
  its encoded bytes, to be decoded in batches by nvJPEG on the GPU;
- anything else, CMYK or greyscale JPEGs and the PNG files ImageNet stores under a ``.JPEG``
  name, is decoded here exactly as the PIL path decodes it (``Image.open(...).convert("RGB")``)
  and travels as a uint8 ``[3, H, W]`` tensor. These are a few thousand of 1.28M images, so
  decoding them on the CPU costs nothing measurable, and no GPU decoder behaviour has to be
  trusted for formats it handles differently or not at all.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .folder_geometry import Geometry, Plan


class EncodedSample(NamedTuple):
    payload: torch.Tensor  # uint8: the file's bytes [N], or the decoded image [3, H, W]
    encoded: bool  # True: bytes for the JPEG decoder; False: already decoded (fallback)
    plan: Plan | None
    label: int


class EncodedBatch(NamedTuple):
    payloads: list[torch.Tensor]
    encoded: list[bool]
    plans: list[Plan | None]
    labels: torch.Tensor  # int64 [B]


def device_decodable(image: Image.Image) -> bool:
    """True for the JPEGs left to the batched decoder: 3-channel JPEGs (PIL mode "RGB")."""
    return image.format == "JPEG" and image.mode == "RGB"


def decode_with_pil(data: bytes | memoryview) -> torch.Tensor:
    """The PIL path's decoder (torchvision's ``default_loader``): RGB uint8 ``[3, H, W]``."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_sample(path: str, label: int, geometry: Geometry,
                sample_seed: int | None) -> EncodedSample:
    """One sample as a worker prepares it (see the module docstring)."""
    data = np.fromfile(path, dtype=np.uint8)
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        plan = geometry.plan(image, sample_seed)
        on_device = device_decodable(image)
    if on_device:
        return EncodedSample(torch.from_numpy(data), True, plan, int(label))
    return EncodedSample(decode_with_pil(data), False, plan, int(label))


class EncodedSamples(Dataset):
    """Map-style dataset over ``samples`` (``(path, label)`` pairs); key ``(index, seed)``."""

    def __init__(self, samples: list[tuple[str, int]], geometry: Geometry) -> None:
        self.samples = list(samples)
        self.geometry = geometry

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> EncodedSample:
        index, sample_seed = key
        path, label = self.samples[index]
        return read_sample(path, label, self.geometry, sample_seed)


def collate_encoded(items: list[EncodedSample]) -> EncodedBatch:
    """Keeps the variable-size payloads as a list (they cannot be stacked)."""
    return EncodedBatch([item.payload for item in items], [item.encoded for item in items],
                        [item.plan for item in items],
                        torch.tensor([item.label for item in items], dtype=torch.int64))
