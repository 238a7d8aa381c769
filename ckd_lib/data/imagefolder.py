"""ImageNet-1K (ImageFolder layout) and Places365 (torchvision, small 256 px) as file datasets.

Why a separate kind of dataset: these sets are far too large to hold in memory as uint8 tensors
(the CIFAR-style :class:`~ckd_lib.data.ImageDataset`), so samples are JPEG files decoded by the
loader's workers (:mod:`ckd_lib.data.imagenet_loader`) or, as bytes, by nvJPEG on the GPU
(:mod:`ckd_lib.data.nvjpeg_loader`). Both read the same ``samples`` list and transform, so labels,
crops and flips agree between them.

Layout checks run before anything long (scanning 1.28M files, or starting workers): missing
data fails at once with a :class:`~ckd_lib.data.errors.DatasetNotFoundError` (a
FileNotFoundError) that names the expected layout and how to obtain it.

Transforms are the standard ImageNet recipe (torchvision's reference scripts, mdistiller):
train RandomResizedCrop(224) + RandomHorizontalFlip; test Resize(256) + CenterCrop(224); then
ToTensor and Normalize with the ImageNet mean and std (also used for Places365, as mdistiller
does). The sizes are parameters so that tests can use tiny images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, make_dataset

from ckd_lib.errors import InputError

from .catalog import FOLDER_DATASETS
from .dataset import stratified_indices
from .errors import DatasetFileError, missing_files_error
from .paths import resolve_root

IMAGEFOLDER_DATASETS = FOLDER_DATASETS
IMAGEFOLDER_SPLITS = ("train", "val", "test")  # "test" is an alias of "val" (no public labels)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = {"imagenet": 1000, "places365": 365}
PLACES365_SPLITS = {"train": "train-standard", "val": "val", "test": "val"}

IMAGENET_HOW_TO = (
    "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
    "(registration required), extract the train archive's 1000 per-class tars into "
    "train/<wnid>/, and sort the 50,000 validation images into val/<wnid>/ (for example with "
    "the widely used valprep.sh script); then pass data_root=<root> or set $CKD_DATA_ROOT."
)
PLACES365_HOW_TO = (
    "download filelist_places365-standard.tar, train_256_places365standard.tar and val_256.tar "
    "from http://places2.csail.mit.edu/download.html and extract them into <root>/places365/, "
    "or call with download=True on a machine with network access (about 26 GB)."
)


def imagenet_transform(
    train: bool,
    crop_size: int = 224,
    resize_size: int = 256,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Callable:
    """The standard ImageNet train or test transform, PIL image -> normalised float32 CHW."""
    if train:
        geometry = [T.RandomResizedCrop(crop_size), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(resize_size), T.CenterCrop(crop_size)]
    return T.Compose(geometry + [T.ToTensor(), T.Normalize(mean, std)])


class FolderImageDataset(Dataset):
    """A labelled list of image files plus the transform of its split.

    Attributes: ``name``, ``split`` ("train"/"val"), ``train`` (which transform), ``root``,
    ``samples`` (list of ``(path, label)``), ``targets``, ``classes``, ``num_classes``,
    ``mean``/``std``, ``transform``. ``dataset[i]`` returns ``(float32 [3, H, W], int label)``.
    Randomness of the train transform comes from torch's default generator, which
    :class:`~ckd_lib.data.imagenet_loader.ImageNetLoader` seeds per sample.
    """

    def __init__(
        self,
        name: str,
        split: str,
        root: Path,
        samples: list[tuple[str, int]],
        classes: list[str],
        transform: Callable | None,
        loader: Callable = default_loader,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_size: int = 224,
        resize_size: int = 256,
    ) -> None:
        self.name = name
        self.split = split
        self.train = split == "train"
        self.root = Path(root)
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.transform = transform
        self.loader = loader
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_size = int(crop_size)
        self.resize_size = int(resize_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            img = self.loader(path)
        except (OSError, SyntaxError, ValueError) as error:  # PIL: truncated, not an image
            raise DatasetFileError(f"{path}: cannot be decoded ({error})") from None
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    @property
    def labels(self) -> torch.Tensor:
        """Labels as an int64 tensor (as :class:`~ckd_lib.data.ImageDataset` has)."""
        return torch.as_tensor(self.targets, dtype=torch.int64)

    def select(self, indices) -> FolderImageDataset:
        """A dataset of the samples at ``indices`` (same classes, transform and metadata)."""
        idx = [int(i) for i in torch.as_tensor(indices).tolist()]
        out = FolderImageDataset.__new__(FolderImageDataset)
        out.__dict__.update(self.__dict__)
        out.samples = [self.samples[i] for i in idx]
        out.targets = [label for _, label in out.samples]
        return out

    def fingerprint(self) -> str:
        """sha256 of the (path relative to ``root``, label) list: identifies the file list and
        labelling cheaply (hashing the JPEG bytes of ImageNet would take an hour)."""
        h = hashlib.sha256()
        h.update(f"{self.name}|{self.num_classes}|".encode())
        for path, label in self.samples:
            try:
                rel = os.path.relpath(path, self.root)
            except ValueError:  # different drive (Windows)
                rel = str(path)
            h.update(f"{rel.replace(os.sep, '/')}\t{label}\n".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"FolderImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, root={str(self.root)!r})"
        )


# ---------------------------------------------------------------------------- ImageNet
def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _imagenet_expected(base: Path) -> str:
    return (
        f"expected {base}/imagenet/train/<wnid>/*.JPEG and {base}/imagenet/val/<wnid>/*.JPEG "
        f"(or data_root pointing directly at the folder holding train/ and val/)"
    )


def find_imagenet_root(data_root: str | os.PathLike | None) -> Path:
    """The folder holding ``train/`` and/or ``val/``: ``<data_root>/imagenet`` or ``data_root``
    itself. Raises DatasetNotFoundError naming the expected layout."""
    base = resolve_root(data_root)
    for candidate in (base / "imagenet", base):
        if (candidate / "train").is_dir() or (candidate / "val").is_dir():
            return candidate
    raise missing_files_error(
        "ImageNet-1K",
        [base / "imagenet" / "train", base / "imagenet" / "val"],
        f"{_imagenet_expected(base)}; {IMAGENET_HOW_TO}",
    ) from None


def _load_imagenet(split: str, data_root, transform: Callable | None, sizes: dict):
    root = find_imagenet_root(data_root)
    folder = root / ("train" if split == "train" else "val")
    expected = _imagenet_expected(resolve_root(data_root))
    if not folder.is_dir():
        raise missing_files_error("ImageNet-1K", folder, f"{expected}; {IMAGENET_HOW_TO}")
    classes = _class_dirs(folder)
    if not classes:
        flat = any(e.is_file() for e in os.scandir(folder))
        hint = (
            f"{folder} holds images but no class folders: the validation images must be "
            f"sorted into val/<wnid>/ first. "
            if flat
            else f"{folder} is empty. "
        )
        raise missing_files_error("ImageNet-1K", folder, f"{hint}{expected}; {IMAGENET_HOW_TO}")
    other = root / ("val" if split == "train" else "train")
    if other.is_dir():
        other_classes = _class_dirs(other)
        if other_classes and other_classes != classes:
            # ImageFolder numbers classes by sorted folder name: a missing folder would shift
            # every later label silently.
            only_here = sorted(set(classes) - set(other_classes))[:5]
            only_there = sorted(set(other_classes) - set(classes))[:5]
            raise InputError(
                f"ImageNet class folders differ between {folder} ({len(classes)}) and {other} "
                f"({len(other_classes)}); labels would not match. Only in {folder.name}/: "
                f"{only_here}; only in {other.name}/: {only_there}"
            )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without images
        raise missing_files_error(
            "ImageNet-1K", folder, f"{exc} {expected}; {IMAGENET_HOW_TO}"
        ) from None
    return FolderImageDataset(
        "imagenet", split, root, samples, classes, transform, default_loader, **sizes
    )


# ---------------------------------------------------------------------------- Places365
def _places365_required(root: Path, tv_split: str) -> list[Path]:
    """The files and folders torchvision's Places365(small=True) reads for ``tv_split``."""
    lists = {"train-standard": "places365_train_standard.txt", "val": "places365_val.txt"}
    images = "data_256_standard" if tv_split == "train-standard" else "val_256"
    return [root / "categories_places365.txt", root / lists[tv_split], root / images]


def _load_places365(split: str, data_root, transform, sizes: dict, download: bool):
    from torchvision.datasets import Places365

    base_root = resolve_root(data_root)
    root = base_root / "places365"
    if (
        not (root / "categories_places365.txt").exists()
        and (base_root / "categories_places365.txt").exists()
    ):
        root = base_root  # data_root points directly at the Places365 folder
    tv_split = PLACES365_SPLITS[split]
    required = _places365_required(root, tv_split)
    expected = (
        f"expected {required[0]}, {required[1]} and the images under {required[2]}/ "
        f"(torchvision.datasets.Places365, small=True, split={tv_split!r})"
    )
    if not download and not all(p.exists() for p in required):
        missing = [p for p in required if not p.exists()]
        raise missing_files_error("Places365", missing, f"{expected}; {PLACES365_HOW_TO}")
    try:
        base = Places365(str(root), split=tv_split, small=True, download=download)
    except (RuntimeError, OSError) as exc:  # corrupted meta files, or a failed download
        raise missing_files_error(
            "Places365", required, f"{expected}; {PLACES365_HOW_TO}", exc if download else None
        ) from exc
    samples = [(str(p), int(t)) for p, t in base.imgs]
    return FolderImageDataset(
        "places365", split, root, samples, list(base.classes), transform, base.loader, **sizes
    )


# ---------------------------------------------------------------------------- entry point
def load_imagefolder_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    *,
    crop_size: int = 224,
    resize_size: int = 256,
    train_transform: bool | None = None,
    subset: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> FolderImageDataset:
    """Load ``split`` ("train", "val"; "test" = "val") of "imagenet" or "places365".

    ImageNet: ``<data_root>/imagenet/{train,val}/<wnid>/*.JPEG`` (``data_root`` may also point
    directly at the folder holding ``train/`` and ``val/``); labels are the sorted class
    folder names, as torchvision's ImageFolder numbers them. Places365: torchvision's
    ``Places365(<data_root>/places365, small=True, split="train-standard" | "val")``.
    ``data_root`` None means :func:`ckd_lib.data.default_data_root`.

    ``crop_size``/``resize_size``: RandomResizedCrop(crop) for train, Resize(resize) +
    CenterCrop(crop) otherwise. ``train_transform`` overrides which one is used (default: the
    train transform for the train split). ``subset=n`` keeps a seeded class-stratified subset
    of n samples (smoke runs). ``download`` is used by Places365 only.
    """
    if name not in IMAGEFOLDER_DATASETS:
        raise InputError(f"unknown dataset {name!r}; accepted: {', '.join(IMAGEFOLDER_DATASETS)}")
    if split not in IMAGEFOLDER_SPLITS:
        raise InputError(f"unknown split {split!r}; accepted: {', '.join(IMAGEFOLDER_SPLITS)}")
    if crop_size < 1 or resize_size < crop_size:
        raise InputError(
            f"need 1 <= crop_size <= resize_size, got crop_size={crop_size}, "
            f"resize_size={resize_size}"
        )
    split = "val" if split == "test" else split
    train = (split == "train") if train_transform is None else bool(train_transform)
    transform = imagenet_transform(train, crop_size, resize_size)
    sizes = {"crop_size": crop_size, "resize_size": resize_size}
    if name == "imagenet":
        dataset = _load_imagenet(split, data_root, transform, sizes)
    else:
        dataset = _load_places365(split, data_root, transform, sizes, download)
    dataset.train = train
    if subset is not None:
        dataset = dataset.select(stratified_indices(dataset.labels, int(subset), seed))
    return dataset
