"""A small generated image-folder dataset in ImageNet's layout, for demos and CPU smoke runs.

Why: the ImageNet notebook's pipeline (JPEG folders, the ImageNet model zoo, torchrun) should be
runnable on a laptop without ImageNet. Each class is a coloured shape (disc, square, triangle,
bar...) on a noisy background at a random position and size, saved as JPEG at a realistic
quality, so a model can learn something and the decoders see real JPEG files. Deterministic from
``seed``; an existing complete folder is reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "rectangle", "triangle", "bar")
COLOURS = ((220, 60, 40), (40, 160, 70), (50, 90, 210), (230, 190, 40), (170, 60, 190),
           (40, 180, 190))


def _image(rng: np.random.Generator, label: int, size: tuple[int, int]) -> Image.Image:
    width, height = size
    noise = rng.integers(60, 140, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    side = int(rng.integers(min(size) // 3, min(size) * 2 // 3))
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    colour = COLOURS[label % len(COLOURS)]
    shape = SHAPES[(label // len(COLOURS) + label) % len(SHAPES)]
    box = (x, y, x + side, y + side)
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=colour)
    else:
        draw.rectangle((x, y + side // 3, x + side, y + 2 * side // 3), fill=colour)
    return image


def make_demo_imagefolder(root: str | Path, dataset: str = "imagenet", classes: int = 4,
                          train_per_class: int = 12, val_per_class: int = 4,
                          size: tuple[int, int] = (80, 64), seed: int = 0) -> Path:
    """``root/<dataset>/{train,val}/<class>/*.JPEG``; returns ``root`` (a data_root)."""
    root = Path(root)
    done = root / dataset / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = root / dataset / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(rng, label, size).save(folder / f"{split}_{label}_{i}.JPEG", quality=90)
    done.write_text("")
    return root
