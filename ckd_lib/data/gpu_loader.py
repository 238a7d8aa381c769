"""A loader that keeps the whole uint8 dataset on the device and augments whole batches there.

Why: at batch 64 a CIFAR step is bound by kernel launches and host work, not arithmetic (the
DataLoader loop of ``ckd_lib.bench`` takes 8-10 s per epoch of resnet32x4 -> resnet8x4 on an
H200, the engine's device-resident path 1.8 s; ``benchmarks/RESULTS.md``). So all per-epoch
randomness (permutation, crop offsets, flips) is drawn once, at the start of the epoch, from a
CPU generator seeded by ``(seed, epoch)``, moved to the device in one copy and turned into
per-sample row/column index grids. Each batch is then one gather (crop + flip at once, with
no Python loop over samples) and four elementwise ops for normalisation, with no host
synchronisation. The random draws depend only on ``(seed, epoch)``, so resuming at epoch ``e``
replays exactly the batches an uninterrupted run would have seen.

Augmentation semantics match torchvision's ``RandomCrop(32, padding=4)`` (zero padding, offsets
uniform in 0..8 per axis, per sample) and ``RandomHorizontalFlip(0.5)`` (per sample). The
normalisation runs the same float32 ops as ``ToTensor`` + ``Normalize``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .dataset import ImageDataset
from .epochs import EpochCounter
from .seeding import epoch_seed

GPU_STREAM = 0  # random stream of the GPU loader within (seed, epoch)


class GpuLoader(EpochCounter):
    """Batches ``(images, labels)`` of ``dataset`` on ``device``; see the module docstring.

    ``train`` selects shuffling + augmentation; test mode keeps the dataset order and does not
    augment. Iterating uses the epoch set by :meth:`set_epoch` and then advances it by one, so a
    loop that never calls ``set_epoch`` still gets a fresh order every epoch, and a resumed run
    calls ``set_epoch(start)`` once. Output: ``dtype`` (float32) images ``[B, 3, H, W]``
    (channels_last memory format when ``channels_last``) and int64 labels ``[B]``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        train: bool,
        device: str | torch.device,
        seed: int,
        drop_last: bool = False,
        *,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        padding: int = 4,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.padding = int(padding) if self.train else 0

        n, c, h, w = dataset.images.shape
        self._n, self._c, self._h, self._w = int(n), int(c), int(h), int(w)
        images = dataset.images
        if self.padding:
            p = self.padding
            images = F.pad(images, (p, p, p, p))  # zeros, like RandomCrop(padding=4)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # The whole (padded) uint8 set, resident on the device for the loader's lifetime.
        self._images = images.to(self.device)
        self._labels = dataset.labels.to(self.device)
        stat = {"dtype": torch.float32, "device": self.device}
        self._mean = torch.tensor(dataset.mean, **stat).view(1, c, 1, 1)
        self._std = torch.tensor(dataset.std, **stat).view(1, c, 1, 1)
        idx = {"dtype": torch.int64, "device": self.device}
        self._ar_h = torch.arange(h, **idx)
        self._ar_w = torch.arange(w, **idx)
        self._ar_w_flipped = torch.arange(w - 1, -1, -1, **idx)
        if self.channels_last:  # index shapes that make the gather produce [B, H, W, C]
            self._ch = torch.arange(c, **idx).view(1, 1, 1, c)
        else:
            self._ch = torch.arange(c, **idx).view(1, c, 1, 1)

    # ----------------------------------------------------------------- epoch bookkeeping


    def __len__(self) -> int:
        if self.drop_last:
            return self._n // self.batch_size
        return -(-self._n // self.batch_size)

    # ----------------------------------------------------------------- the epoch's plan
    def epoch_plan(self, epoch: int) -> dict[str, torch.Tensor]:
        """All random draws of ``epoch`` on the device: ``perm`` [N], ``labels`` [N] (permuted),
        ``rows``/``cols`` [N, H]/[N, W] index grids into the padded images (flip folded in).
        Depends only on ``(seed, epoch)``."""
        n, p = self._n, self.padding
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, GPU_STREAM))
        perm = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=g)
        flips = torch.randint(0, 2, (n,), generator=g)
        host = torch.cat([perm[None], offsets, flips[None]])  # one [4, N] transfer
        if self.device.type == "cuda":
            host = host.pin_memory()
        perm_d, dy, dx, flip = host.to(self.device, non_blocking=True).unbind(0)
        cols = torch.where(flip.bool()[:, None], self._ar_w_flipped, self._ar_w)
        return {
            "perm": perm_d,
            "labels": self._labels[perm_d],
            "rows": dy[:, None] + self._ar_h,
            "cols": dx[:, None] + cols,
        }

    # ----------------------------------------------------------------- iteration
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        # The ops of ToTensor + Normalize, in float32, in place (keeps the memory format).
        x = x.to(torch.float32).div_(255.0).sub_(self._mean).div_(self._std)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def _crop(self, plan: dict[str, torch.Tensor], s: int, e: int) -> torch.Tensor:
        perm, rows, cols = plan["perm"][s:e], plan["rows"][s:e], plan["cols"][s:e]
        if self.channels_last:
            out = self._images[
                perm.view(-1, 1, 1, 1), self._ch, rows[:, :, None, None], cols[:, None, :, None]
            ]  # [B, H, W, C]
            return out.permute(0, 3, 1, 2)
        return self._images[
            perm.view(-1, 1, 1, 1), self._ch, rows[:, None, :, None], cols[:, None, None, :]
        ]  # [B, C, H, W]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        plan = self.epoch_plan(epoch) if self.train else None
        return self._batches(plan)

    def _batches(self, plan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b = self._n, self.batch_size
        for i in range(self.skip_batches, len(self)):
            s, e = i * b, min((i + 1) * b, n)
            if plan is None:
                yield self._normalise(self._images[s:e]), self._labels[s:e]
            else:
                yield self._normalise(self._crop(plan, s, e)), plan["labels"][s:e]
