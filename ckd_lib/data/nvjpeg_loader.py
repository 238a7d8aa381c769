"""Image-folder loader that decodes JPEGs on the training device: the "nvjpeg" loader kind.

Why: one H200 trained ResNet34 -> ResNet18 CKD at 9,104 images/s as a step alone but 1,347
end to end with the PIL DataLoader on 16 cores (``benchmarks/RESULTS.md``): the run was bound by
CPU JPEG decoding. Here the CPU workers only read file bytes and draw each sample's crop from the
image header (:mod:`ckd_lib.data.jpeg_samples`); the training process decodes each batch with
one batched ``torchvision.io.decode_jpeg`` call on the device (nvJPEG on CUDA,
:mod:`ckd_lib.data.jpeg_decode`), crops, flips and resizes every image there
(:mod:`ckd_lib.data.folder_geometry`), stacks and normalises the batch, all in a background
thread one or two batches ahead (:mod:`ckd_lib.data.prefetch`).

Same data as the PIL path (:class:`~ckd_lib.data.imagenet_loader.ImageNetLoader`): the same
sharded order (:class:`~ckd_lib.data.imagenet_loader.ShardedEpochSampler`), the same crop boxes
and flips (drawn by the dataset's own transform objects under the same per-sample seed), the same
labels; pixels differ only by the decoders' and resizers' rounding (``tests/test_gpu_decode.py``
states the bound). Epoch ``e`` depends only on ``(seed, e)``.

Whether it is faster than the PIL path depends on the card and the cores per GPU; the engine's
"auto" loader stays "torch" until ``benchmarks/device_check.py`` has measured it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .epochs import EpochCounter
from .folder_geometry import (
    Geometry,
    TrainGeometry,
    channel_constants,
    geometry_of,
    normalise_batch,
)
from .imagenet_loader import ShardedEpochSampler
from .jpeg_decode import decode_rgb
from .jpeg_samples import EncodedBatch, EncodedSamples, collate_encoded
from .prefetch import StreamHandoff, prepared_ahead
from .seeding import derive_seed
from .torch_loader import LOADER_STREAM, _seed_worker


class EpochKeys(Sampler):
    """The DataLoader's sampler: this epoch's ``(index, sample_seed)`` keys, set before each
    pass. Holding them as a list means a pass can start at batch k by slicing it."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int | None]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        return iter(self.keys)


class NvJpegLoader(EpochCounter):
    """Decodes and augments on ``device``; the interface of :class:`ImageNetLoader`.

    ``dataset``: a file dataset with ``samples`` and an ImageNet transform (e.g.
    :func:`~ckd_lib.data.load_imagefolder_dataset`'s result); its transform decides the
    geometry (random crop + flip, or resize + centre crop) and the normalisation. ``set_epoch``,
    ``len()`` (this rank's batches) and iteration yielding ``(images float32 [B, 3, S, S]
    normalised, labels int64 [B])`` already on ``device`` (default: CUDA when available), in
    channels_last memory format when ``channels_last``. ``drop_last`` None: True in training.
    ``num_workers`` processes read the files; ``prefetch_batches`` batches are prepared ahead.
    ``decode_counts`` counts how the images seen so far were decoded (keys of
    :mod:`ckd_lib.data.jpeg_decode`).
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
        device: str | torch.device | None = None,
        channels_last: bool = False,
        prefetch_batches: int = 2,
        prefetch_factor: int | None = 4,
        persistent_workers: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch_batches < 1:
            raise ValueError(f"prefetch_batches must be >= 1, got {prefetch_batches}")
        self.geometry: Geometry = geometry_of(getattr(dataset, "transform", None))
        if isinstance(self.geometry, TrainGeometry) and not train:
            raise ValueError("the dataset has the random training transform but the loader is "
                             "in evaluation order (train=False), which draws no sample seeds")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.prefetch_batches = int(prefetch_batches)
        self.decode_counts: Counter = Counter()
        self._constants: tuple[torch.Tensor, torch.Tensor] | None = None  # mean, std on device
        self.sampler = ShardedEpochSampler(
            len(dataset.samples), self.train, self.seed, self.batch_size, self.rank,
            self.world_size)
        self._keys = EpochKeys()
        self._handoff = StreamHandoff(self.device)
        self._generator = torch.Generator()  # DataLoader's base seed; not the global RNG
        workers = self.num_workers > 0
        self._loader = DataLoader(
            EncodedSamples(dataset.samples, self.geometry),
            batch_size=self.batch_size,
            sampler=self._keys,
            num_workers=self.num_workers,
            collate_fn=collate_encoded,
            drop_last=self.drop_last,
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
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_keys(self, epoch: int) -> list[tuple[int, int | None]]:
        """This rank's ``(index, sample_seed)`` keys of ``epoch``, in order."""
        self.sampler.epoch = int(epoch)
        return list(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        # a pass resumed at batch k of the epoch (set_epoch(e, start_batch=k)) leaves out the
        # first k batches' keys; the rest are the same keys as in an uninterrupted pass
        self._keys.keys = self.epoch_keys(epoch)[self.skip_batches * self.batch_size:]
        self._generator.manual_seed(derive_seed(self.seed, epoch, LOADER_STREAM, self.rank))
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for (images, labels), event in prepared_ahead(self._loader, self._prepare_on_stream,
                                                      self.prefetch_batches):
            yield self._handoff.receive((images, labels), event)

    def _prepare_on_stream(self, batch: EncodedBatch):
        return self._handoff.run(self.prepare, batch)

    def prepare(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode, crop/resize/flip each image, stack and normalise one batch on the device."""
        images = decode_rgb(batch.payloads, batch.encoded, self.device, self.decode_counts)
        size = self.geometry.output_size
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty((len(images), 3, *size), dtype=torch.float32, device=self.device,
                          memory_format=memory_format)
        for k, (image, plan) in enumerate(zip(images, batch.plans, strict=True)):
            out[k].copy_(self.geometry.apply(image, plan))
        if self._constants is None:
            self._constants = (channel_constants(self.geometry.mean, self.device),
                               channel_constants(self.geometry.std, self.device))
        x = normalise_batch(out, *self._constants)
        labels = batch.labels
        if self.device.type == "cuda":  # pinned, so that the copy does not wait for the GPU
            labels = labels.pin_memory()
        return x, labels.to(self.device, non_blocking=True)
