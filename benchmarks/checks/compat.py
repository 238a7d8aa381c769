"""Stand-ins for packages the engine imports but a bare GPU machine may lack.

Why: the device check runs from a copied working tree on machines without network, where only
torch, torchvision, numpy, Pillow, PyYAML and pandas can be counted on. The training engine
imports ``tqdm.auto`` for its progress bar, which the check switches off anyway; without tqdm a
do-nothing bar is registered in its place. (pycocotools is imported only for COCO AP, which the
check does not compute.)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types


class _SilentBar:
    """Just enough of tqdm for a disabled progress bar: iterate, update, close."""

    def __init__(self, iterable=None, *args, **kwargs) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, *args, **kwargs) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def install_missing() -> list[str]:
    """Register the stand-ins for whatever is missing; returns their names."""
    try:
        missing = importlib.util.find_spec("tqdm") is None
    except (ImportError, ValueError):  # a broken or blocked installation
        missing = True
    if not missing:
        return []
    package, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    for module in (package, auto):
        # a spec, as real modules have: torch's own import-time checks read it
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        module.tqdm = _SilentBar
    package.auto = auto
    sys.modules["tqdm"], sys.modules["tqdm.auto"] = package, auto
    return ["tqdm"]
