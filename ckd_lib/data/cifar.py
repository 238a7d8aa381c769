"""CIFAR-10 and CIFAR-100 from the original python pickles ("cifar-*-python" folders).

Why we read the pickles ourselves and use torchvision only to download: the reader is ten lines,
it does not insist on the md5 of the official archive (so tests can write tiny files in the same
format), and it lets us check for the files *before* anything tries the network.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ckd_lib.safe_pickle import UnsafePickleError, load_numpy_pickle

from .dataset import ImageDataset
from .errors import DatasetFileError, missing_files_error


@dataclass(frozen=True)
class CifarSpec:
    """What distinguishes CIFAR-10 from CIFAR-100 on disk and in statistics."""

    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    url: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str


CIFAR100 = CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    # The constants of mdistiller/RepDistiller (per-pixel statistics of the training set).
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
    torchvision_class="CIFAR100",
)

CIFAR10 = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    # Per-pixel statistics of the training set, the same convention as the CIFAR-100 constants
    # (not the often-copied 0.2023/0.1994/0.2010, which average per-image stds).
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    torchvision_class="CIFAR10",
)


def _unpickle(path: Path) -> dict:
    """One CIFAR batch file: numpy arrays and lists only (a file that asks for anything else,
    which could run code, is refused), or a DatasetFileError naming the file."""
    try:
        obj = load_numpy_pickle(path, "a CIFAR batch file")
    except UnsafePickleError as error:
        raise DatasetFileError(str(error)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as error:
        raise DatasetFileError(f"{path}: not a readable CIFAR batch file ({type(error).__name__}:"
                               f" {error}); delete the folder to download it again") from None
    if not isinstance(obj, dict):
        raise DatasetFileError(f"{path}: not a CIFAR batch file (holds a {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _files_present(folder: Path, spec: CifarSpec) -> bool:
    names = spec.train_files + spec.test_files
    return all((folder / n).is_file() for n in names)


def _download(root: Path, spec: CifarSpec) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    getattr(tvd, spec.torchvision_class)(root=str(root), train=True, download=True)


def load_cifar(spec: CifarSpec, split: str, root: Path, download: bool = True,
               create_root: bool = True) -> ImageDataset:
    """Load one split from ``root/<spec.folder>``; download there first if files are missing.
    ``create_root=False`` (a data_root the user named): a ``root`` that does not exist is
    refused, never created, so a mistyped path does not become a new folder."""
    folder = root / spec.folder
    if not _files_present(folder, spec):
        failure: BaseException | None = None
        if download and not create_root and not root.is_dir():
            failure = FileNotFoundError(f"data_root {root} does not exist; not creating it")
        elif download:
            try:
                _download(root, spec)
            except Exception as exc:  # network, disk, checksum: all end in the same advice
                failure = exc
        if not _files_present(folder, spec):
            raise missing_files_error(
                spec.title,
                folder,
                f"download {spec.url} and extract it into {root} (it creates {spec.folder}/), "
                f"or run once with internet access (download=True), or pass data_root= the "
                f"folder that contains {spec.folder}/.",
                failure,
            ) from None
    files = spec.train_files if split == "train" else spec.test_files
    data, labels = [], []
    for name in files:
        entry = _unpickle(folder / name)
        try:
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in entry[spec.label_key])
        except (KeyError, ValueError, TypeError) as error:
            raise DatasetFileError(f"{folder / name}: not a CIFAR batch file "
                                   f"({type(error).__name__}: {error})") from None
    classes = None
    if (folder / spec.meta_file).is_file():
        names = _unpickle(folder / spec.meta_file).get(spec.names_key)
        classes = tuple(str(c) for c in names) if names is not None else None
    return ImageDataset(
        source=str(folder),
        images=torch.from_numpy(np.concatenate(data)),
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        name=spec.name,
        split=split,
        classes=classes,
    )
