"""An ImageNet-layout folder of generated JPEGs, at ImageNet's sizes and quality, written fast.

Why generated: the GPU machines have no ImageNet and no network. What decoding costs depends on
pixel count and entropy, so the files imitate ImageNet's: the longer side 500 px (the shorter
333..500, three in four landscape), smooth colour regions plus grain, quality 90, which gives
60-110 KB files like ImageNet's average. A few files are the kinds nvJPEG is not given (a CMYK
JPEG, a greyscale JPEG, a PNG under a .JPEG name) and one progressive JPEG, so those paths run
too. Classes are written in parallel, one process per class folder.

An epoch of a few thousand files is too short to measure a DataLoader whose 16 workers each
build a whole batch of 512 (the epoch would be mostly the pipeline filling up), and writing tens
of thousands of files takes too long; so each training file can also be listed several times,
as hard links (:func:`link_copies`): decoding costs the same, and the epoch is long enough.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

LONG_SIDE = 500
SHORT_SIDE = (333, 500)
QUALITY = 90
ODD_KINDS = ("cmyk", "grey", "png", "progressive")


def photo_like(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Smooth random colour regions (upsampled from a coarse grid) plus +-12 levels of grain."""
    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one ImageNet-like photo."""
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    return (short, LONG_SIDE) if rng.random() < 0.75 else (LONG_SIDE, short)


def save(image: Image.Image, path: Path, kind: str | None) -> None:
    if kind == "cmyk":
        image.convert("CMYK").save(path, "JPEG", quality=QUALITY)
    elif kind == "grey":
        image.convert("L").save(path, "JPEG", quality=QUALITY)
    elif kind == "png":
        image.save(path, "PNG")  # ImageNet has a few PNG files named .JPEG
    elif kind == "progressive":
        image.save(path, "JPEG", quality=QUALITY, progressive=True)
    else:
        image.save(path, "JPEG", quality=QUALITY)


def _write_class(job: tuple[str, int, int, bool]) -> int:
    folder, count, seed, odd = job
    rng = np.random.default_rng(seed)
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = 0
    for i in range(count):
        kind = ODD_KINDS[i] if odd and i < len(ODD_KINDS) else None
        path = Path(folder) / f"img_{i:05d}.JPEG"
        save(photo_like(rng, *image_size(rng)), path, kind)
        written += path.stat().st_size
    return written


def make_imagefolder(root: Path, train_images: int, val_images: int, classes: int,
                     processes: int | None = None, seed: int = 0) -> dict:
    """Write ``root/imagenet/{train,val}/<class>/*.JPEG``; the first train class holds the odd
    kinds. Returns counts, bytes and seconds."""
    started = time.perf_counter()
    jobs = []
    for split, total in (("train", train_images), ("val", val_images)):
        for c in range(classes):
            count = total // classes + (1 if c < total % classes else 0)
            odd = split == "train" and c == 0
            folder = str(Path(root) / "imagenet" / split / f"n{c:08d}")
            jobs.append((folder, max(count, 1), seed * 100003 + len(jobs), odd))
    processes = max(1, min(processes or os.cpu_count() or 1, len(jobs)))
    if processes == 1:
        sizes = [_write_class(job) for job in jobs]
    else:
        with ProcessPoolExecutor(processes) as pool:
            sizes = list(pool.map(_write_class, jobs))
    files = sum(job[1] for job in jobs)
    return {"root": str(root), "files": files, "classes": classes,
            "mean_kb": sum(sizes) / files / 1024, "processes": processes,
            "seconds": time.perf_counter() - started}


def link_copies(root: Path, copies: int) -> int:
    """List every training file ``copies`` times in its class folder (hard links, or symbolic
    links where the file system has none); returns the number of training entries."""
    originals = sorted((Path(root) / "imagenet" / "train").rglob("*.JPEG"))
    for path in originals:
        for k in range(1, copies):
            link = path.with_name(f"{path.stem}_copy{k}{path.suffix}")
            try:
                os.link(path, link)
            except OSError:
                link.symlink_to(path)
    return len(originals) * max(copies, 1)
