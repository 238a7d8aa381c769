"""Optional NVIDIA DALI input pipeline: JPEG decode, crop and normalise on the GPU.

Why: at batch 512 an ImageNet step of ResNet34 -> ResNet18 on a modern GPU needs thousands of
decoded and augmented JPEGs per second per GPU, more than a few CPU workers deliver with PIL.
DALI decodes with nvJPEG (``fn.decoders.image(device="mixed")``: the Huffman stage on the CPU,
the rest on the GPU) and crops, flips and normalises on the GPU.

The loader has the interface of the DataLoader path (:class:`~ckd_lib.data.imagenet_loader.
ImageNetLoader`): ``set_epoch``, ``len()``, iteration yielding ``(images float32 [B, 3, H, W]
normalised, labels int64 [B])``, here already on the GPU (``self.device``). It takes the same
file list (``dataset.samples``), so labels agree with the torch path, and the same sharding
(:func:`~ckd_lib.data.imagenet_loader.shard_indices`): each epoch's order and each rank's share
depend only on ``(seed, epoch)``. To obtain that, the reader gets this rank's files of the
epoch in order (``random_shuffle=False``) and the pipeline is rebuilt at every epoch with a seed
derived from ``(seed, epoch, rank)`` (a second or two per epoch). The random crops themselves
are DALI's, so they are not the same as the torch path's, and bit-exact replay of an epoch's
augmentation relies on DALI's own determinism for a fixed pipeline seed.

DALI is an extra (``pip install ckd_lib[dali]``, i.e. the ``nvidia-dali-cuda120`` package, or
``nvidia-dali-cuda130`` for CUDA 13): it is imported only when a DALI loader is built, and its
absence raises an ImportError that says what to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import torch

from .epochs import EpochCounter
from .imagenet_loader import ShardedEpochSampler, shard_indices
from .seeding import derive_seed

DALI_STREAM = 3  # random stream of the DALI pipeline seed within (seed, epoch)
DALI_PACKAGES = "nvidia-dali-cuda120 (CUDA 12.x) or nvidia-dali-cuda130 (CUDA 13.x)"
DALI_INSTALL_HINT = (
    "NVIDIA DALI is not installed, so the 'dali' input pipeline is unavailable. Install it with "
    f"`pip install ckd_lib[dali]` or directly `pip install {DALI_PACKAGES}`; DALI needs an "
    "NVIDIA GPU with CUDA on Linux. Otherwise use the DataLoader path (kind='torch')."
)
# nvJPEG scratch sizes from NVIDIA's ImageNet example: large enough for ImageNet's biggest
# JPEGs, so the decoder does not reallocate during the first epochs.
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported (it is not imported here)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no "nvidia" namespace package at all
        return False


def import_dali():
    """Import DALI's modules, or raise an ImportError that says what to install."""
    try:
        from nvidia.dali import Pipeline, fn, types
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator
    except ImportError as exc:
        raise ImportError(f"{DALI_INSTALL_HINT} (import error: {exc})") from exc
    return Pipeline, fn, types, DALIGenericIterator, LastBatchPolicy


def build_dali_pipeline(
    files: list[str],
    labels: list[int],
    *,
    batch_size: int,
    train: bool,
    seed: int,
    device_id: int,
    num_threads: int = 4,
    crop_size: int = 224,
    resize_size: int = 256,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    random_area: tuple[float, float] = (0.08, 1.0),
    random_aspect_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    prefetch_queue_depth: int = 2,
    reader_name: str = "Reader",
):
    """A built DALI pipeline reading ``files`` in the given order; outputs (images, labels).

    Train: decode (mixed) -> random resized crop to ``crop_size`` (area ``random_area`` of the
    image, aspect ``random_aspect_ratio``, as torchvision's RandomResizedCrop) -> random
    horizontal flip (p 0.5) and normalisation. Eval: decode -> resize the shorter side to
    ``resize_size`` -> center crop ``crop_size`` and normalisation. Output: float32 CHW.
    """
    Pipeline, fn, types, _, _ = import_dali()
    pipe = Pipeline(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    with pipe:
        jpegs, file_labels = fn.readers.file(
            files=list(files), labels=list(labels), random_shuffle=False, name=reader_name
        )
        images = fn.decoders.image(
            jpegs,
            device="mixed",
            output_type=types.RGB,
            device_memory_padding=DEVICE_MEMORY_PADDING,
            host_memory_padding=HOST_MEMORY_PADDING,
        )
        if train:
            images = fn.random_resized_crop(
                images,
                device="gpu",
                size=[crop_size, crop_size],
                random_area=list(random_area),
                random_aspect_ratio=list(random_aspect_ratio),
                antialias=True,
            )
            extra = {"mirror": fn.random.coin_flip(probability=0.5)}  # per-sample flag
        else:
            images = fn.resize(images, device="gpu", resize_shorter=resize_size, antialias=True)
            extra = {"crop": (crop_size, crop_size)}  # centred: crop_pos_x/y default 0.5
        images = fn.crop_mirror_normalize(
            images,
            device="gpu",
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[255.0 * m for m in mean],
            std=[255.0 * s for s in std],
            **extra,
        )
        pipe.set_outputs(images, file_labels.gpu())
    pipe.build()
    return pipe


class DaliImageNetLoader(EpochCounter):
    """DALI-backed loader with the interface of :class:`ImageNetLoader` (outputs on the GPU).

    ``dataset``: anything with ``samples`` (list of ``(path, label)``), ``mean``/``std`` and,
    optionally, ``crop_size``/``resize_size`` (e.g. :func:`load_imagefolder_dataset`'s result).
    ``device_id`` None means ``torch.cuda.current_device()`` (under torchrun, call
    ``torch.cuda.set_device(local_rank)`` first). ``drop_last`` None: True in training.
    ``copy`` clones each batch out of DALI's buffers, so a batch stays valid after the next
    one is requested (cheap next to decoding; set False if every batch is consumed at once).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device_id: int | None = None,
        num_threads: int = 4,
        drop_last: bool | None = None,
        crop_size: int | None = None,
        resize_size: int | None = None,
        prefetch_queue_depth: int = 2,
        copy: bool = True,
    ) -> None:
        import_dali()  # fail now, with the install hint, rather than at the first epoch
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_threads = int(num_threads)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.crop_size = int(crop_size or getattr(dataset, "crop_size", 224))
        self.resize_size = int(resize_size or getattr(dataset, "resize_size", 256))
        self.prefetch_queue_depth = int(prefetch_queue_depth)
        self.copy = bool(copy)
        if device_id is None:
            if not torch.cuda.is_available():
                raise RuntimeError("the DALI loader decodes on a CUDA GPU, and none is visible")
            device_id = torch.cuda.current_device()
        self.device_id = int(device_id)
        self.device = torch.device("cuda", self.device_id)
        self.sampler = ShardedEpochSampler(
            len(dataset.samples),
            self.train,
            self.seed,
            self.batch_size,
            self.rank,
            self.world_size,
        )


    @property
    def num_samples(self) -> int:
        """This rank's number of samples per epoch (before dropping a last partial batch)."""
        return len(self.sampler)


    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        return self._iterate(epoch)

    def _iterate(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _, _, _, DALIGenericIterator, LastBatchPolicy = import_dali()
        indices, _ = shard_indices(
            len(self.dataset.samples),
            self.train,
            self.seed,
            epoch,
            self.batch_size,
            self.rank,
            self.world_size,
        )
        if self.drop_last:
            indices = indices[: len(indices) - len(indices) % self.batch_size]
        if not indices:
            return
        samples = self.dataset.samples
        pipe = build_dali_pipeline(
            [str(samples[i][0]) for i in indices],
            [int(samples[i][1]) for i in indices],
            batch_size=self.batch_size,
            train=self.train,
            seed=derive_seed(self.seed, epoch, DALI_STREAM, self.rank) % (2**31),
            device_id=self.device_id,
            num_threads=self.num_threads,
            crop_size=self.crop_size,
            resize_size=self.resize_size,
            mean=tuple(self.dataset.mean),
            std=tuple(self.dataset.std),
            prefetch_queue_depth=self.prefetch_queue_depth,
        )
        iterator = DALIGenericIterator(
            [pipe],
            ["images", "labels"],
            reader_name="Reader",
            last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False,
        )
        try:
            for outputs in iterator:
                batch = outputs[0]
                images = batch["images"]
                labels = batch["labels"].reshape(-1).to(torch.int64)  # copies: int32 -> int64
                yield (images.clone() if self.copy else images), labels
        finally:
            del iterator, pipe  # frees the pipeline's GPU buffers before the next epoch's
