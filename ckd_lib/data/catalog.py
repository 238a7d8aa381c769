"""The datasets the study knows, defined once: names, display names, model zoo, split sizes.

Why one table: the names used to be listed in the config, the data registry, the image-folder
reader, the study and the report, each slightly differently. Everything else derives from this:
which names a config accepts, which loader and model zoo a dataset uses, how the report writes
its name, and the split sizes that let a config with ``train_subset=10**9`` or a batch larger
than its data be refused before any file is read.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIASES = {"fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist"}


@dataclass(frozen=True)
class DatasetInfo:
    """``zoo``: "cifar" (32x32 in memory) or "imagenet" (image folders); ``sizes``: (train,
    test) images, None where they depend on parameters or on the folder."""

    name: str
    display: str
    zoo: str
    sizes: tuple[int, int] | None
    num_classes: int | None


CATALOG = {info.name: info for info in (
    DatasetInfo("cifar100", "CIFAR-100", "cifar", (50_000, 10_000), 100),
    DatasetInfo("cifar10", "CIFAR-10", "cifar", (50_000, 10_000), 10),
    DatasetInfo("fashion_mnist", "Fashion-MNIST", "cifar", (60_000, 10_000), 10),
    DatasetInfo("synthetic", "synthetic data", "cifar", None, None),
    DatasetInfo("imagenet", "ImageNet-1K", "imagenet", None, 1000),
    DatasetInfo("places365", "Places365", "imagenet", None, 365),
    DatasetInfo("coco", "MS-COCO", "detection", None, 80),
)}
SMALL_DATASETS = tuple(n for n, i in CATALOG.items() if i.zoo == "cifar")
FOLDER_DATASETS = tuple(n for n, i in CATALOG.items() if i.zoo == "imagenet")
CLASSIFICATION_DATASETS = SMALL_DATASETS + FOLDER_DATASETS


def dataset_base(name: str) -> str:
    """The dataset name without parameters or case: ``"synthetic:num_classes=5"`` ->
    ``"synthetic"``, ``"FMNIST"`` -> ``"fashion_mnist"``."""
    base = str(name).partition(":")[0].strip().lower().replace("-", "_")
    return ALIASES.get(base, base)


def display_name(name: str) -> str:
    """How tables and banners write a dataset: "CIFAR-100", "synthetic data (num_train=64)"."""
    base = dataset_base(name)
    info = CATALOG.get(base)
    pretty = info.display if info else str(name)
    params = str(name).partition(":")[2]
    return f"{pretty} ({params})" if params else pretty


def split_sizes(name: str) -> tuple[int, int] | None:
    """(train, test) images of a dataset, where known without reading it."""
    base = dataset_base(name)
    if base == "synthetic":
        from ckd_lib.data.synthetic import DEFAULTS

        params = dict(item.split("=", 1) for item in str(name).partition(":")[2].split(",")
                      if "=" in item)
        try:
            return (int(params.get("num_train", DEFAULTS["num_train"])),
                    int(params.get("num_test", DEFAULTS["num_test"])))
        except ValueError:
            return None
    info = CATALOG.get(base)
    return info.sizes if info else None
