"""The tuned DataLoader path for ImageNet-scale file datasets, sharded over DDP ranks.

Why not ``DistributedSampler``: the study needs the order and augmentation of epoch ``e`` to
depend only on ``(seed, e)`` (exact resume, docs/CONTRACTS.md "Data"), and it is useful that a
run on W ranks with per-rank batch B sees, step by step, exactly the global batches of a
single-process run with batch W*B. :class:`ShardedEpochSampler` does both:

- train: one permutation of the whole dataset from ``(seed, epoch)`` (the same stream as
  :class:`~ckd_lib.data.TorchLoader`); truncated to a multiple of W (at most W-1 samples, a
  different few each epoch); cut into consecutive global batches of W*B; rank r takes the r-th
  contiguous block of B of each. The ranks' slices are disjoint, cover the (truncated) epoch,
  and concatenated in rank order give the single-process batch. Every rank gets the same number
  of samples and batches, and the last (partial) batch has the same size on every rank, as the
  collectives of DDP and of ``global`` CKD negatives require. With W=1 it is plain shuffling.
- eval: dataset order, no truncation and no padding (padding would count some images twice);
  the ranks' sample counts differ by at most one, so evaluate the unwrapped model and reduce
  the correct/total counts with a SUM over ranks.

Each sample's augmentation runs under a torch seed derived from ``(seed, epoch, index)``: it
does not depend on the world size, the number of workers or which worker loads it.
Tuning knobs (defaults for a GPU host): 8 workers per rank, pinned memory when CUDA is
available, persistent workers, prefetch factor 4.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .epochs import EpochCounter
from .seeding import derive_seed, epoch_seed, seeded_default_generator, splitmix64
from .torch_loader import LOADER_STREAM, ORDER_STREAM, _seed_worker


def shard_indices(
    n: int, train: bool, seed: int, epoch: int, batch_size: int, rank: int, world_size: int
) -> tuple[list[int], int]:
    """Rank ``rank``'s dataset indices for ``epoch`` and the epoch's permutation seed
    (0 in eval mode). See the module docstring for the rule."""
    if train:
        base = epoch_seed(seed, epoch, ORDER_STREAM)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(base)).tolist()
        order = order[: n - n % world_size]
    else:
        base, order = 0, list(range(n))
    step = batch_size * world_size
    mine: list[int] = []
    for start in range(0, len(order), step):
        block = order[start : start + step]
        m = len(block)
        mine.extend(block[m * rank // world_size : m * (rank + 1) // world_size])
    return mine, base


class ShardedEpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` keys of this rank's share of epoch ``self.epoch``
    (``sample_seed`` is None in eval mode)."""

    def __init__(
        self, n: int, train: bool, seed: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.n, self.train, self.seed = int(n), bool(train), int(seed)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.epoch = 0
        self.skip = 0  # leading samples of this rank's epoch left out (resumed inside it)

    def indices(self, epoch: int | None = None) -> list[int]:
        """This rank's dataset indices, in order, for ``epoch`` (default: ``self.epoch``)."""
        epoch = self.epoch if epoch is None else int(epoch)
        return shard_indices(
            self.n, self.train, self.seed, epoch, self.batch_size, self.rank, self.world_size
        )[0]

    def __len__(self) -> int:
        n = self.n - self.n % self.world_size if self.train else self.n
        step = self.batch_size * self.world_size
        tail = n % step
        r, w = self.rank, self.world_size
        return (n // step) * self.batch_size + tail * (r + 1) // w - tail * r // w

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        mine, base = shard_indices(
            self.n,
            self.train,
            self.seed,
            self.epoch,
            self.batch_size,
            self.rank,
            self.world_size,
        )
        mine = mine[self.skip:]
        if not self.train:
            return ((i, None) for i in mine)
        return ((i, splitmix64(base + i)) for i in mine)


class SeededSamples(Dataset):
    """Wraps a map-style dataset; key ``(index, seed)`` runs ``dataset[index]`` with torch's
    default generator seeded by ``seed`` (restored afterwards in the main process)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int | None]):
        index, sample_seed = key
        if sample_seed is None:
            return self.dataset[index]
        with seeded_default_generator(sample_seed):
            return self.dataset[index]


class ImageNetLoader(EpochCounter):
    """DataLoader over a file dataset (e.g. :func:`load_imagefolder_dataset`), sharded by rank.

    Same interface as :class:`~ckd_lib.data.TorchLoader`: :meth:`set_epoch`, ``len()`` (this
    rank's number of batches), iteration yields ``(images float32 [B, 3, H, W] normalised,
    labels int64 [B])`` on the CPU (pinned when ``pin_memory``); the caller moves them to the
    device with ``non_blocking=True``. Iterating uses the epoch set by :meth:`set_epoch`, then
    advances it by one. Call ``set_epoch(e)`` before each epoch on every rank (resume included).

    ``drop_last`` None means True for training (a last batch of a few images would add noise
    and, if of one image, break BatchNorm) and False for evaluation (every image counts once).
    ``pin_memory`` None means ``torch.cuda.is_available()``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        train: bool,
        seed: int,
        num_workers: int = 8,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 4,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.device = torch.device("cpu")
        self.sampler = ShardedEpochSampler(
            len(dataset), self.train, self.seed, self.batch_size, self.rank, self.world_size
        )
        self._generator = torch.Generator()  # DataLoader's base seed; not the global RNG
        workers = self.num_workers > 0
        self._loader = DataLoader(
            SeededSamples(dataset),
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            drop_last=self.drop_last,
            pin_memory=self.pin_memory,
            persistent_workers=bool(persistent_workers) and workers,
            prefetch_factor=prefetch_factor if workers else None,
            worker_init_fn=_seed_worker if workers else None,
            generator=self._generator,
        )


    @property
    def num_samples(self) -> int:
        """This rank's number of samples per epoch (before dropping a last partial batch)."""
        return len(self.sampler)


    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        self.sampler.epoch = epoch
        self.sampler.skip = self.skip_batches * self.batch_size
        self._generator.manual_seed(derive_seed(self.seed, epoch, LOADER_STREAM, self.rank))
        return iter(self._loader)


IMAGENET_LOADER_KINDS = ("torch", "nvjpeg")


def make_imagenet_loader(
    kind: str,
    dataset: Dataset,
    batch_size: int,
    train: bool,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    **kwargs,
):
    """Build the ImageNet-scale loader of ``kind``: "torch" (:class:`ImageNetLoader`: PIL
    decoding in CPU workers, yields CPU tensors) or "nvjpeg"
    (:class:`~ckd_lib.data.nvjpeg_loader.NvJpegLoader`: workers read bytes, batches are decoded
    and augmented on ``device``, where they are yielded). ``kwargs`` go to the loader (e.g.
    ``num_workers``; ``pin_memory`` for "torch"; ``device``, ``channels_last`` for "nvjpeg")."""
    if kind == "torch":
        loader_class = ImageNetLoader
    elif kind == "nvjpeg":
        from .nvjpeg_loader import NvJpegLoader  # here: that module imports this one

        loader_class = NvJpegLoader
    else:
        raise ValueError(f"unknown ImageNet loader kind {kind!r}; accepted: "
                         f"{', '.join(IMAGENET_LOADER_KINDS)}")
    return loader_class(dataset, batch_size, train, seed, rank=rank, world_size=world_size,
                        drop_last=drop_last, **kwargs)
