"""Iteration-indexed training batches for detection, identical after a resume and across GPUs.

Why not ``DistributedSampler`` + epochs: COCO schedules count iterations (Detectron2's 1x is
90k iterations of 16 images), and a run stopped at iteration 37,412 must resume with exactly the
batches it would have seen. Here the order is a pure function of the iteration:

* the training stream is epoch 0, epoch 1, ... back to back; epoch ``e`` is a permutation of
  the images, and a flip bit per item, drawn from a generator seeded by ``(seed, e)`` only;
* iteration ``i`` is the stream's items ``[i*B, (i+1)*B)`` with ``B`` the global batch, so an
  iteration may straddle two epochs, and no image is dropped or repeated within an epoch;
* rank ``r`` of ``world_size`` takes the ``r``-th contiguous slice of ``B / world_size`` items.

So what iteration ``i`` yields depends only on (seed, i, rank, world_size, num_images, B): the
resume point needs no saved sampler state, and the ranks' slices of an iteration together are
exactly the single-process batch (a 1-GPU and an 8-GPU run see the same global batches).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator

import torch


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that mixes (seed, epoch) well; ``seed + epoch`` would make runs with
    seeds 0 and 1 share all but one epoch."""
    digest = hashlib.blake2b(f"ckd-detection-batches:{seed}:{epoch}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


class TrainingBatches:
    """Batch sampler (``DataLoader(batch_sampler=...)``) yielding ``[(index, flip), ...]``.

    One list per iteration in ``[start_iteration, stop_iteration)``; see the module docstring
    for how the lists are drawn. ``images_per_batch`` is the global batch over all ranks.
    """

    _CACHE_EPOCHS = 2  # an iteration spans at most two epochs when B <= num_images

    def __init__(
        self,
        num_images: int,
        images_per_batch: int,
        *,
        seed: int,
        start_iteration: int = 0,
        stop_iteration: int,
        rank: int = 0,
        world_size: int = 1,
        flip: bool = True,
    ) -> None:
        self.num_images = _check_int("num_images", num_images, 1)
        self.images_per_batch = _check_int("images_per_batch", images_per_batch, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be an int in [0, world_size={world_size}), got {rank!r}"
            )
        self.rank = rank
        if images_per_batch % world_size:
            raise ValueError(
                f"images_per_batch={images_per_batch} (the global batch) is not divisible by "
                f"world_size={world_size}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.start_iteration = _check_int("start_iteration", start_iteration, 0)
        self.stop_iteration = _check_int("stop_iteration", stop_iteration, 0)
        if start_iteration > stop_iteration:
            raise ValueError(
                f"start_iteration={start_iteration} is after stop_iteration={stop_iteration}"
            )
        self.flip = bool(flip)
        self.images_per_rank = images_per_batch // world_size
        self._epochs: OrderedDict[int, tuple[list[int], list[bool]]] = OrderedDict()

    def _epoch(self, epoch: int) -> tuple[list[int], list[bool]]:
        cached = self._epochs.get(epoch)
        if cached is not None:
            return cached
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(self.num_images, generator=generator).tolist()
        # The flips are drawn after the order from the same generator, so flip=False does not
        # change the order.
        flips = torch.randint(0, 2, (self.num_images,), generator=generator).bool().tolist()
        if not self.flip:
            flips = [False] * self.num_images
        self._epochs[epoch] = (order, flips)
        while len(self._epochs) > self._CACHE_EPOCHS:
            self._epochs.popitem(last=False)
        return order, flips

    def batch(self, iteration: int) -> list[tuple[int, bool]]:
        """This rank's ``(index, flip)`` items of one iteration (any iteration >= 0)."""
        _check_int("iteration", iteration, 0)
        first = iteration * self.images_per_batch + self.rank * self.images_per_rank
        items = []
        for position in range(first, first + self.images_per_rank):
            epoch, offset = divmod(position, self.num_images)
            order, flips = self._epoch(epoch)
            items.append((order[offset], flips[offset]))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for iteration in range(self.start_iteration, self.stop_iteration):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return self.stop_iteration - self.start_iteration
