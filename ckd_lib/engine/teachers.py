"""Where a run's teacher comes from: a checkpoint file, torchvision's weights, or nothing.

CIFAR teachers are mdistiller/RepDistiller checkpoints (or a teacher run's model_last.pth); the
ImageNet teachers are torchvision's pretrained weights ("torchvision"), found in torch.hub's cache
(TORCH_HOME) or downloaded there. Without network and without the file, the error says which file
to place where, before any training starts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ckd_lib.models import create_model, load_teacher
from ckd_lib.models.checkpoint import file_sha256

UNTRAINED = "untrained"
TORCHVISION = "torchvision"


def torchvision_weights_file(name: str) -> tuple[Path, str, float | None]:
    """(expected cache path, download URL, published top-1) of torchvision's IMAGENET1K_V1."""
    import torchvision.models as tvm

    weights = tvm.get_model_weights(name.lower()).IMAGENET1K_V1
    filename = weights.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    top1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return path, weights.url, top1


def load_torchvision_teacher(name: str, num_classes: int) -> tuple[nn.Module, dict]:
    path, url, top1 = torchvision_weights_file(name)
    if not path.is_file():
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
        except Exception as error:  # no network, proxy, disk: all need the same advice
            raise FileNotFoundError(
                f"torchvision's pretrained {name} weights are not at {path} and could not be "
                f"downloaded ({type(error).__name__}: {error}). Place {path.name} (from {url}) "
                f"in {path.parent}, or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/"
                f"{path.name} exists, or pass teacher_checkpoint=<path to that .pth>") from None
    model = create_model(name, num_classes=num_classes, dataset="imagenet")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, {"path": str(path), "sha256": file_sha256(path), "stored_accuracy": top1}


def build_teacher(name: str, checkpoint: str, num_classes: int, zoo: str, seed: int):
    """The frozen teacher and what the record says about it."""
    if checkpoint == UNTRAINED:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=num_classes, dataset=zoo)
        info = {"stored_accuracy": None, "sha256": None, "path": UNTRAINED}
    elif checkpoint == TORCHVISION:
        model, info = load_torchvision_teacher(name, num_classes)
    else:
        model, info = load_teacher(name, checkpoint, num_classes=num_classes, dataset=zoo)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info
