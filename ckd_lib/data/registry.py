"""``load_dataset``: one entry point from a dataset name to an :class:`ImageDataset`.

Why a name-based entry point: notebooks are parameterised by strings (papermill), so the
dataset must be selectable by a plain name such as ``"cifar100"`` or
``"synthetic:num_classes=5,num_train=200"``.
"""

from __future__ import annotations

import os

from ckd_lib.errors import InputError

from .catalog import SMALL_DATASETS, dataset_base
from .cifar import CIFAR10, CIFAR100, load_cifar
from .dataset import ImageDataset, take_subset
from .fashion_mnist import load_fashion_mnist
from .paths import resolve_root
from .synthetic import make_synthetic

DATASET_NAMES = SMALL_DATASETS
SPLITS = ("train", "test")


def _parse_value(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_name(name: str) -> tuple[str, dict]:
    """Split ``"base:key=value,key=value"`` into a canonical base name and its parameters."""
    if not isinstance(name, str):
        raise InputError(f"dataset name must be a string, got {name!r}; accepted: {DATASET_NAMES}")
    base, rest = dataset_base(name), name.partition(":")[2]
    params: dict = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise InputError(f"dataset parameter {item!r} in {name!r} is not key=value")
        params[key.strip()] = _parse_value(value.strip())
    return base, params


def check_dataset_name(name: str) -> tuple[str, dict]:
    """Everything about a dataset name that can be checked without reading files: parameters
    only for "synthetic", and only the ones it takes, as numbers. Returns ``(base, params)``."""
    base, params = parse_name(name)
    if params and base != "synthetic":
        raise InputError(f"dataset {name!r}: {base} takes no parameters, got {sorted(params)}")
    if base == "synthetic":
        from .synthetic import DEFAULTS

        unknown = sorted(set(params) - set(DEFAULTS))
        bad = [k for k, v in params.items() if not isinstance(v, (int, float))]
        if unknown or bad:
            raise InputError(f"dataset {name!r}: synthetic takes numeric parameters "
                             f"{sorted(DEFAULTS)}; got {unknown + bad}")
    return base, params


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    subset: int | None = None,
    seed: int = 0,
    *,
    download: bool = True,
    **params,
) -> ImageDataset:
    """Load ``split`` ("train"/"test") of dataset ``name`` as uint8 ``[N, 3, 32, 32]`` tensors.

    ``data_root`` defaults to :func:`ckd_lib.data.paths.default_data_root`. Missing files are
    downloaded when ``download`` is true and the network allows; otherwise a
    :class:`~ckd_lib.data.errors.DatasetNotFoundError` (a FileNotFoundError) says where they
    were expected and how to get them. ``subset=n`` keeps a class-stratified subset of ``n``
    samples chosen by ``seed``. Extra keyword ``params`` (or ``"name:k=v,..."``) configure the
    synthetic dataset.
    """
    base, name_params = check_dataset_name(name)
    if base not in DATASET_NAMES:
        raise InputError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    params = {**name_params, **params}
    if params and base != "synthetic":
        raise InputError(f"dataset {base!r} takes no parameters, got {sorted(params)}")
    if base == "synthetic":
        dataset = make_synthetic(split, **params)
    elif base == "fashion_mnist":
        dataset = load_fashion_mnist(split, resolve_root(data_root), download=download)
    else:
        spec = CIFAR100 if base == "cifar100" else CIFAR10
        dataset = load_cifar(spec, split, resolve_root(data_root), download=download,
                             create_root=data_root is None)
    return take_subset(dataset, subset, seed)
