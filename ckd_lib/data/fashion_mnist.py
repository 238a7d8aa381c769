"""Fashion-MNIST as a CIFAR-shaped dataset: 28x28 grey padded to 32x32, replicated to 3 channels.

Why this shape: it is the one real dataset available offline (Debian ``dataset-fashion-mnist``),
and in this form every CIFAR model and the CIFAR augmentation run on it unchanged.
Lookup order: ``data_root`` (flat, or torchvision's ``FashionMNIST/raw`` layout), the Debian
folder, then a torchvision download into ``data_root``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset
from .errors import DatasetFileError, missing_files_error
from .idx import read_idx

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

PAD = 2  # 28 + 2 * 2 = 32

# Per-pixel mean/std (in [0, 1]) of the 60,000 training images *after* zero-padding to 32x32,
# float64 over all 60000*32*32 pixels, population std: 0.218999832..., 0.331811373...
# (unpadded 28x28 they would be 0.2860/0.3530). The three channels are identical copies.
# tests/test_data.py recomputes them from the real files when those are installed.
MEAN = (0.2190, 0.2190, 0.2190)
STD = (0.3318, 0.3318, 0.3318)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(root: Path) -> list[Path]:
    """Folders searched, in order, for the four IDX files."""
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist", SYSTEM_DIR]


def _locate(root: Path, split: str) -> tuple[Path, Path] | None:
    for folder in candidate_dirs(root):
        images, labels = (_find(folder, stem) for stem in FILES[split])
        if images is not None and labels is not None:
            return images, labels
    return None


def _download(root: Path) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    tvd.FashionMNIST(root=str(root), train=True, download=True)


def to_cifar_layout(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> uint8 ``[N, 3, 32, 32]``: zero border of 2 px, grey -> RGB."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2 * PAD, w + 2 * PAD), dtype=np.uint8)
    padded[:, PAD : PAD + h, PAD : PAD + w] = images
    return torch.from_numpy(padded).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def load_fashion_mnist(split: str, root: Path, download: bool = True) -> ImageDataset:
    """Load one split, downloading through torchvision only when no copy is found."""
    found = _locate(root, split)
    if found is None:
        failure: BaseException | None = None
        if download:
            try:
                _download(root)
            except Exception as exc:  # network, disk, checksum: all end in the same advice
                failure = exc
            found = _locate(root, split)
        if found is None:
            raise missing_files_error(
                "Fashion-MNIST",
                candidate_dirs(root),
                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs them in "
                f"{SYSTEM_DIR}), or run once with internet access (download=True), or copy the "
                f"four files ({', '.join(s + '.gz' for s in FILES['train'] + FILES['test'])}) "
                "into data_root.",
                failure,
            ) from None
    images_path, labels_path = found
    if images_path.parent == SYSTEM_DIR and root != SYSTEM_DIR:
        note = f"system copy {SYSTEM_DIR} (none in {root})"
    else:
        note = str(images_path.parent)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetFileError(
            f"{images_path}: expected uint8 [N, 28, 28], got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise DatasetFileError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} "
                               "images")
    return ImageDataset(
        images=to_cifar_layout(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=10,
        mean=MEAN,
        std=STD,
        name="fashion_mnist",
        split=split,
        classes=CLASSES,
        source=note,
    )
