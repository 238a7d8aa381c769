"""The device check's one table, its JSON, and the GPU-hours that follow from its figures."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from . import targets

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set
COLUMNS = ("section", "figure", "value", "unit", "target", "verdict")


def environment() -> dict:
    """Card, software versions and date, read in the parent process."""
    import numpy
    import PIL
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "card": torch.cuda.get_device_name(0) if cuda else "cpu",
        "card_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "time": time.strftime("%H:%M:%S %Z"),
    }


def slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia_h100_80gb_hbm3"`` (for file names)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "device"


def default_out(env: dict, dry_run: bool, benchmarks: Path, scratch: Path) -> Path:
    """benchmarks/device_check_<card>_<date>.json; a dry run's goes to ``scratch`` instead,
    so that checking the script does not leave files in the repository."""
    name = f"device_check_{slug(env['card'])}_{env['date']}.json"
    return (scratch if dry_run else benchmarks) / name


def value_of(figures: dict, key: str):
    """A figure's value, whether it was recorded bare or with its detail."""
    figure = figures.get(key)
    return figure.get("value") if isinstance(figure, dict) else figure


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def gpu_hours(figures: dict, dry_run: bool) -> tuple[list[dict], dict]:
    """Rows and figures for one ImageNet and one COCO run on one GPU of the measured kind,
    computed from the measured rates (training only: evaluation passes are not included)."""
    from ckd_lib.detection.config import DetectionConfig
    from ckd_lib.recipes import get_recipe

    epochs = get_recipe("imagenet", "ResNet34", "ResNet18", "CKD").epochs
    coco = DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root="unused")
    e2e = [_number(value_of(figures, f"imagenet.e2e_{k}_img_s")) for k in ("torch", "nvjpeg")]
    e2e = [r for r in e2e if r]
    ceiling = _number(value_of(figures, "imagenet.ceiling_img_s"))
    coco_s = _number(value_of(figures, "coco.ReviewKD+CKD_s_per_it"))
    images = epochs * IMAGENET_TRAIN_IMAGES
    estimates = {
        "imagenet_faster_loader": (f"one ImageNet R34 -> R18 CKD run ({epochs} epochs), faster "
                                   "loader", images / max(e2e) / 3600 if e2e else None),
        "imagenet_ceiling": (f"one ImageNet run ({epochs} epochs) at the step ceiling",
                             images / ceiling / 3600 if ceiling else None),
        "coco_reviewkd_ckd": (f"one COCO R101 -> R18 ReviewKD+CKD run ({coco.iterations:,} it of "
                              f"{coco.images_per_batch} images)",
                              coco.iterations * coco_s / 3600 if coco_s else None),
    }
    rows, out = [], {}
    for key, (label, hours) in estimates.items():
        verdict = targets.DRY if dry_run else ("" if hours is not None else "not measured")
        hours = None if dry_run else hours
        out[key] = hours
        rows.append({"key": f"gpu_hours.{key}", "section": "estimate", "figure": label,
                     "value": hours, "unit": "GPU-hours", "target": "", "verdict": verdict})
    return rows, out


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1 or value == 0:
        return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return f"{value:.3g}"


def format_table(rows: list[dict]) -> str:
    cells = [[str(r["section"]), str(r["figure"]), format_value(r["value"]), str(r["unit"]),
              str(r["target"]), str(r["verdict"])] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    right = {2}  # numbers align right

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(c) for c in cells])
