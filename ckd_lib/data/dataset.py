"""The in-memory image set every loader consumes, and seeded subsetting.

Why one small container: the CIFAR-style datasets of the study (CIFAR-10/100, Fashion-MNIST
padded to 32x32, synthetic test data) all fit in memory as uint8, so a dataset is just two
tensors plus the constants needed to normalise them. Loaders then differ only in *how* they
augment, never in what data they see, and the fingerprint proves which data a run used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import torch


@dataclass(eq=False)
class ImageDataset:
    """uint8 images ``[N, 3, H, W]`` (CPU, contiguous), int64 labels ``[N]`` and their statistics.

    ``mean``/``std`` are per-channel constants of the *training* split in [0, 1] units, used by
    the loaders for ``(x / 255 - mean) / std``; the test split carries the same constants.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    split: str = "train"
    classes: tuple[str, ...] | None = None
    source: str | None = None  # where the files were read from (said in logs and records)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = getattr(images, "dtype", type(images).__name__)
            raise TypeError(f"images must be a uint8 tensor, got {got}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [N, 3, H, W], got {tuple(images.shape)}")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}"
            )
        self.images = images.detach().cpu().contiguous()
        self.labels = labels.detach().cpu().to(torch.int64).contiguous()
        self.num_classes = int(self.num_classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 entries (one per channel)")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes
        ):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """sha256 hex of the image bytes followed by the (int64, little-endian) label bytes.

        Cached: the tensors are treated as immutable once the dataset is built.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.images.numpy().tobytes())
            h.update(self.labels.numpy().astype("<i8", copy=False).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def select(self, indices: torch.Tensor) -> ImageDataset:
        """A new dataset holding the given samples (in the given order)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return replace(self, images=self.images[idx], labels=self.labels[idx])


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified subset of ``n`` samples.

    Each class contributes in proportion to its share of the full set (up to rounding; which
    classes receive the remainder is itself seeded). Method: shuffle, give every sample the key
    ``(rank within its class + 0.5) / class size``, and keep the ``n`` smallest keys; ties are
    broken by the shuffled order. Deterministic for ``(labels, n, seed)``.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    total = int(labels.numel())
    if not 0 < n <= total:
        raise ValueError(f"subset must be in 1..{total}, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=g)
    shuffled = labels[perm]
    # Rank of each shuffled sample within its class: stable sort by class, then position.
    order = torch.sort(shuffled, stable=True).indices
    sorted_labels = shuffled[order]
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(total, dtype=torch.int64)
    rank[order] = torch.arange(total) - starts[sorted_labels]
    key = (rank.double() + 0.5) / counts[shuffled].double()
    chosen = perm[torch.sort(key, stable=True).indices[:n]]
    return torch.sort(chosen).values


def take_subset(dataset: ImageDataset, n: int | None, seed: int = 0) -> ImageDataset:
    """``dataset`` itself when ``n`` is None, else its stratified subset of ``n`` samples."""
    if n is None:
        return dataset
    return dataset.select(stratified_indices(dataset.labels, int(n), seed))
