"""Datasets as in-memory uint8 tensors, and the loaders that batch and augment them.

See docs/CONTRACTS.md ("Data"). ``load_dataset`` turns a name into an :class:`ImageDataset`;
``GpuLoader`` (fast, device-resident) and ``TorchLoader`` (the reference DataLoader path) both
make the order and augmentation of epoch ``e`` a function of ``(seed, e)`` only.
"""

from .dataset import ImageDataset, stratified_indices, take_subset
from .errors import DatasetNotFoundError
from .gpu_loader import GpuLoader
from .idx import parse_idx, read_idx
from .loaders import LOADER_KINDS, make_loader
from .paths import default_data_root
from .registry import DATASET_NAMES, SPLITS, load_dataset
from .seeding import epoch_seed
from .torch_loader import TorchLoader

__all__ = [
    "DATASET_NAMES",
    "LOADER_KINDS",
    "SPLITS",
    "DatasetNotFoundError",
    "GpuLoader",
    "ImageDataset",
    "TorchLoader",
    "default_data_root",
    "epoch_seed",
    "load_dataset",
    "make_loader",
    "parse_idx",
    "read_idx",
    "stratified_indices",
    "take_subset",
]

from .imagefolder import (  # noqa: E402
    IMAGEFOLDER_DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderImageDataset,
    imagenet_transform,
    load_imagefolder_dataset,
)
from .imagenet_loader import (  # noqa: E402
    IMAGENET_LOADER_KINDS,
    ImageNetLoader,
    ShardedEpochSampler,
    make_imagenet_loader,
)
from .nvjpeg_loader import NvJpegLoader  # noqa: E402

__all__ += [
    "IMAGEFOLDER_DATASETS",
    "IMAGENET_LOADER_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FolderImageDataset",
    "ImageNetLoader",
    "NvJpegLoader",
    "ShardedEpochSampler",
    "imagenet_transform",
    "load_imagefolder_dataset",
    "make_imagenet_loader",
]
