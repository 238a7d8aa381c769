"""Loading frozen teachers from RepDistiller/mdistiller checkpoints (and saving in that format).

Why this exists: a teacher that silently fails to load (wrong architecture name, a DataParallel
``module.`` prefix, a 10-class head) would quietly ruin every distillation run built on it. So
``load_teacher`` checks the file against the architecture *before* loading and reports, in one
readable message, which keys are missing, which are unexpected and which have another shape.

Formats accepted (``torch.load`` result):
- RepDistiller ``<name>_vanilla/ckpt_epoch_240.pth``:
  ``{"epoch", "model", "accuracy", "optimizer"}`` (its ``<name>_best.pth`` stores ``"best_acc"``
  instead of ``"accuracy"``);
- mdistiller ``student_*``/``best``: ``{"model", ...}``, with ``"best_acc"`` where present;
- a ``{"state_dict": ...}`` dict, or a plain state dict (e.g. torchvision's weights).
Keys may carry a ``module.`` prefix (DataParallel / DDP); it is stripped. Accuracies saved as
0-d tensors (RepDistiller's meters hold tensors) become floats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ckd_lib.errors import InputError, MissingFileError

from .registry import create_model

__all__ = ["CheckpointMismatchError", "load_teacher", "save_checkpoint", "file_sha256"]

_ACCURACY_KEYS = ("accuracy", "best_acc", "acc", "test_acc")
_MAX_LISTED = 20


class CheckpointMismatchError(InputError):
    """The checkpoint's state dict does not fit the requested architecture."""

    def __init__(self, name: str, path: str, missing, unexpected, mismatched):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)  # (key, expected shape, found shape)
        lines = [f"checkpoint {path} does not match architecture {name!r}:"]
        lines += _listing("missing keys", self.missing, str)
        lines += _listing("unexpected keys", self.unexpected, str)
        lines += _listing(
            "shape mismatches (key: expected -> found)",
            self.mismatched,
            lambda t: f"{t[0]}: {tuple(t[1])} -> {tuple(t[2])}",
        )
        super().__init__("\n".join(lines))


def _listing(title: str, items: list, fmt) -> list[str]:
    if not items:
        return []
    out = [f"  {title} ({len(items)}):"]
    out += [f"    {fmt(it)}" for it in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        out.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return out


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (identifies the exact teacher a result was produced with)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _split_checkpoint(obj, path: str) -> tuple[dict, float | None, int | None]:
    """Return ``(state_dict, stored accuracy, epoch)`` from any accepted format."""
    if _is_state_dict(obj):
        return dict(obj), None, None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and _is_state_dict(obj[key]):
                acc = next((obj[k] for k in _ACCURACY_KEYS if obj.get(k) is not None), None)
                epoch = obj.get("epoch")
                return (
                    dict(obj[key]),
                    None if acc is None else float(acc),
                    None if epoch is None else int(epoch),
                )
        top = sorted(map(str, obj.keys()))
        raise InputError(
            f"{path}: no state dict found (expected a state dict, or a dict with a 'model' or "
            f"'state_dict' entry holding one); top-level keys: {top}"
        )
    raise InputError(
        f"{path}: expected a checkpoint dict or a state dict, got {type(obj).__name__}"
    )


def read_checkpoint(path: str | Path, map_location="cpu"):
    """``torch.load(weights_only=True)`` of a checkpoint file (tensors and plain containers
    only: a file from elsewhere cannot run code), with an InputError that says what is wrong
    with it: not a PyTorch file (text, say), truncated, or holding other Python objects."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised with the path
        text = str(exc)
        with open(path, "rb") as handle:
            head = handle.read(4)
        if "weights_only" in text or "Unsupported global" in text:
            reason = ("it stores Python objects besides tensors and plain containers, which are "
                      "not loaded from files (they could run code); re-save its state dict")
        elif head[:2] == b"PK" and ("central directory" in text or "zip" in text.lower()):
            reason = "it is truncated or damaged (an incomplete zip archive)"
        elif head[:1] == b"\x80":
            reason = "it is truncated or damaged (an incomplete pickle)"
        else:
            reason = "it is not a PyTorch checkpoint"
        raise InputError(f"cannot read checkpoint {path}: {reason}") from None


def _strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}


def load_teacher(
    name: str,
    path: str | Path,
    num_classes: int = 100,
    dataset: str = "cifar",
    map_location="cpu",
) -> tuple[nn.Module, dict]:
    """Build ``name`` and load the checkpoint at ``path`` strictly; return ``(model, info)``.

    The model comes back in eval mode with ``requires_grad=False`` on every parameter (a teacher
    is frozen). ``info`` = ``{"stored_accuracy": float | None, "epoch": int | None,
    "sha256": hex digest of the file, "path": str}``.

    The file is read with ``weights_only=True``: pickled Python objects are refused (files
    from elsewhere cannot run code).

    Raises InputError (a ValueError): no such file, unreadable or not a checkpoint, and
    CheckpointMismatchError (keys or shapes do not fit ``name``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"teacher checkpoint {str(path)!r} not found")
    obj = read_checkpoint(path, map_location)
    state, accuracy, epoch = _split_checkpoint(obj, str(path))
    state = _strip_prefix(state)
    model = create_model(name, num_classes=num_classes, dataset=dataset)
    expected = model.state_dict()

    # BatchNorm's step counter is absent from files written before PyTorch 0.4.1 and unused in
    # eval mode: fill it in rather than reject the file.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(expected[k].shape), tuple(state[k].shape))
        for k in expected
        if k in state and expected[k].shape != state[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(name, str(path), missing, unexpected, mismatched)

    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    info = {
        "stored_accuracy": accuracy,
        "epoch": epoch,
        "sha256": file_sha256(path),
        "path": str(path),
    }
    return model, info


def save_checkpoint(
    model: nn.Module | Mapping,
    path: str | Path,
    accuracy: float | None = None,
    epoch: int | None = None,
) -> Path:
    """Save in RepDistiller's teacher format ``{"model", "accuracy", "epoch"}`` (loadable by
    ``load_teacher`` and by RepDistiller/mdistiller). ``model`` may be a module or a state dict;
    a DataParallel/DDP/compiled wrapper is unwrapped so keys carry no prefix."""
    if isinstance(model, nn.Module):
        inner = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        inner = getattr(inner, "module", inner)  # DataParallel / DDP
        state = inner.state_dict()
    else:
        state = dict(model)
    from ckd_lib.results import atomic_torch_save

    path = Path(path)
    payload = {
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "accuracy": None if accuracy is None else float(accuracy),
        "epoch": None if epoch is None else int(epoch),
    }
    atomic_torch_save(payload, path)  # whole or not at all; the same bytes for the same weights
    return path
