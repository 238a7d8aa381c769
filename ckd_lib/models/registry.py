"""Name -> constructor registry for the model zoo.

Why a registry: notebooks, recipes (``reference/recipes.csv``) and checkpoints refer to models by
the exact names RepDistiller/mdistiller use (``resnet32x4``, ``wrn_40_2``, ``MobileNetV2``...).
A decorator keeps each name next to the code that builds it, and one lookup function gives every
caller the same error message listing the valid names.

Two zoos exist because the same name means different networks: ``ResNet18`` on CIFAR is the
3x3-stem variant for 32x32 inputs, on ImageNet it is torchvision's 7x7-stem network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ckd_lib.errors import InputError

__all__ = ["DATASETS", "register", "create_model", "family", "list_models", "resolve_dataset"]

#: Canonical zoo names.
DATASETS = ("cifar", "imagenet")

# Data-set names that mean "use this zoo". CIFAR-sized (32x32) inputs go to the CIFAR zoo, full
# resolution ImageNet-style inputs to the ImageNet zoo.
_ALIASES = {
    "cifar": "cifar",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "cifar-10": "cifar",
    "cifar-100": "cifar",
    "fashion_mnist": "cifar",
    "fashion-mnist": "cifar",
    "imagenet": "imagenet",
    "imagenet1k": "imagenet",
    "imagenet-1k": "imagenet",
    "places365": "imagenet",
}

_REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {d: {} for d in DATASETS}


def resolve_dataset(dataset: str) -> str:
    """Map a data-set name (or alias) to its zoo, raising ValueError for unknown names."""
    key = str(dataset).lower()
    if key not in _ALIASES:
        raise InputError(
            f"unknown dataset {dataset!r} for the model zoo; valid: {sorted(_ALIASES)}"
        )
    return _ALIASES[key]


def register(name: str, dataset: str = "cifar") -> Callable:
    """Decorator: register ``fn(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""
    zoo = resolve_dataset(dataset)

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY[zoo]:
            raise InputError(f"model {name!r} registered twice in the {zoo} zoo")
        _REGISTRY[zoo][name] = fn
        return fn

    return deco


def list_models(dataset: str | None = None) -> list[str]:
    """Sorted model names of one zoo, or of both zoos (union, no duplicates) when ``None``."""
    if dataset is None:
        return sorted({n for zoo in _REGISTRY.values() for n in zoo})
    return sorted(_REGISTRY[resolve_dataset(dataset)])


def create_model(name: str, num_classes: int = 100, dataset: str = "cifar", **kwargs) -> nn.Module:
    """Build a freshly initialised model by name.

    Extra keyword arguments go to the constructor (e.g. ``zero_init_residual`` for the CIFAR
    ResNet18/50, ``weights`` for torchvision's ImageNet ResNets).
    """
    zoo = resolve_dataset(dataset)
    if name not in _REGISTRY[zoo]:
        others = [d for d in DATASETS if d != zoo and name in _REGISTRY[d]]
        hint = (
            f" ({name!r} exists in the {others[0]} zoo: pass dataset={others[0]!r})"
            if others
            else ""
        )
        raise InputError(
            f"unknown model {name!r} for dataset {zoo!r}{hint}; valid: {list_models(zoo)}"
        )
    return _REGISTRY[zoo][name](num_classes=num_classes, **kwargs)


def family(model: str | None) -> str:
    """Architecture family of a model name: resnet8x4 -> resnet, wrn_40_2 -> wrn, ShuffleV1 ->
    shufflev, None -> "" (the rule the CIFAR-100 tables split same- and cross-architecture
    pairs by; the study plans and the report both use it)."""
    letters = ""
    for char in model or "":
        if not char.isalpha():
            break
        letters += char
    return letters.lower()
