"""The reference input pipeline: PIL images, torchvision transforms, a DataLoader with workers.

Why keep it: it is how mdistiller/RepDistiller feed CIFAR (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize; 2 workers), so it anchors both accuracy and speed
comparisons with the authors' loop. Two changes make it reproducible:
- the sampler draws the permutation from a generator seeded by ``(seed, epoch)``;
- every sample's augmentation runs under a torch seed derived from ``(seed, epoch, index)``,
  so it does not depend on the number of workers or on which worker loads the sample, and in the
  main process (``num_workers=0``) the global RNG is restored afterwards.
The sampler hands ``(index, sample_seed)`` keys to the dataset, which lets the workers persist
across epochs and still see the new epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torchvision import transforms as T

from .dataset import ImageDataset
from .epochs import EpochCounter
from .seeding import epoch_seed, splitmix64

ORDER_STREAM = 1  # random stream of the permutation within (seed, epoch)
LOADER_STREAM = 2  # random stream of DataLoader's own base seed (unused by our transforms)


class AugmentedImages(Dataset):
    """PIL + torchvision view of an :class:`ImageDataset`; keys are ``(index, seed or None)``."""

    def __init__(self, dataset: ImageDataset, train: bool, padding: int = 4) -> None:
        self.hwc = dataset.images.permute(0, 2, 3, 1).contiguous().numpy()  # PIL wants HWC
        self.labels = dataset.labels.tolist()
        size = tuple(dataset.images.shape[2:])
        augment = [T.RandomCrop(size, padding=padding), T.RandomHorizontalFlip()] if train else []
        self.transform = T.Compose(augment + [T.ToTensor(), T.Normalize(dataset.mean, dataset.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        index, sample_seed = key
        img = Image.fromarray(self.hwc[index])
        if sample_seed is None:
            return self.transform(img), self.labels[index]
        # The transforms draw from torch's default CPU generator. Seeding it directly costs ~1 us
        # (torch.manual_seed also seeds every accelerator backend: ~90 us per sample).
        rng = torch.default_generator
        saved = rng.get_state() if get_worker_info() is None else None  # main process: restore
        rng.manual_seed(sample_seed)
        try:
            x = self.transform(img)
        finally:
            if saved is not None:
                rng.set_state(saved)
        return x, self.labels[index]


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)``: a ``(seed, epoch)``-seeded permutation in train mode,
    ``(i, None)`` in dataset order in test mode."""

    def __init__(self, n: int, train: bool, seed: int) -> None:
        self.n, self.train, self.seed, self.epoch = int(n), bool(train), int(seed), 0
        self.skip = 0  # leading samples of the epoch left out (a pass resumed inside it)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        if not self.train:
            return ((i, None) for i in range(self.skip, self.n))
        base = epoch_seed(self.seed, self.epoch, ORDER_STREAM)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(base)).tolist()
        return ((i, splitmix64(base + i)) for i in perm[self.skip:])


def _seed_worker(worker_id: int) -> None:
    # Hygiene for transforms that use numpy or `random` (the default ones use torch only).
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class TorchLoader(EpochCounter):
    """DataLoader-based loader with the interface of :class:`~ckd_lib.data.GpuLoader`.

    Yields CPU tensors (pinned when CUDA is available); the caller moves them to the device.
    Iterating uses the epoch set by :meth:`set_epoch`, then advances it by one.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        train: bool,
        seed: int,
        num_workers: int = 2,
        drop_last: bool = False,
        *,
        padding: int = 4,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.drop_last = bool(drop_last)
        self.device = torch.device("cpu")
        self._sampler = EpochSampler(len(dataset), self.train, self.seed)
        # Own generator: DataLoader would otherwise draw its base seed from the global RNG.
        self._generator = torch.Generator()
        self._loader = DataLoader(
            AugmentedImages(dataset, self.train, padding),
            batch_size=self.batch_size,
            sampler=self._sampler,
            num_workers=self.num_workers,
            drop_last=self.drop_last,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_seed_worker if self.num_workers > 0 else None,
            generator=self._generator,
        )



    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        self._sampler.epoch = epoch
        self._sampler.skip = self.skip_batches * self.batch_size
        self._generator.manual_seed(epoch_seed(self.seed, epoch, LOADER_STREAM))
        return iter(self._loader)
