"""A small generated dataset in the MS-COCO layout and format, for tests and demos.

Why: the COCO code paths (json loading, category-id mapping, polygon and RLE masks, crowd-free
training targets, pycocotools evaluation, a short distillation run) need data that exists on
every machine, is tiny, and whose truth is known exactly. Real COCO is 20 GB.

What it holds: coloured shapes on a noisy dark background, in three categories whose ids are
deliberately not contiguous (as COCO's are not), so a wrong id -> label mapping shows:

* 1 "square": a filled axis-aligned rectangle, segmentation as a polygon;
* 3 "disc": a filled ellipse, segmentation as compressed RLE (``counts`` a str);
* 7 "triangle": a filled triangle, segmentation as a polygon.

Annotations describe what is visible: a later object paints over an earlier one, the earlier
object's mask is its visible pixels, and its box and area are the tight box and pixel count of
that mask. An occluded object's visible part is no longer a polygon, so its segmentation is then
written as RLE (COCO mixes both too). Polygons are rasterised with pycocotools itself, so a
polygon decodes to exactly the pixels painted. Placements that would hide more than half of an
earlier object, or whose box overlaps one with IoU > 0.5, are retried.

Determinism: each image is drawn from its own ``numpy`` generator seeded by (seed, split, index),
so the same parameters give byte-identical files, and the val set does not change with
``num_train``. The parameters are stored in each json's ``info``; a complete dataset with the same
parameters is left as it is (no rewrite), and a folder holding other annotations (real COCO) is
never overwritten.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ckd_lib.results import atomic_write_bytes, atomic_write_json

SHAPES_VERSION = 1
CATEGORIES = (
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "disc", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
)
# Class colours (RGB); each object jitters them a little.
_COLOURS = {1: (210, 60, 50), 3: (60, 200, 80), 7: (70, 100, 230)}
_KINDS = {1: "square", 3: "disc", 7: "triangle"}  # what each category is drawn as


def coco_categories() -> tuple[dict, ...]:
    """The 80 categories with MS-COCO's own ids (1..90 with gaps), each drawn as one of the three
    shapes in a colour of its own: what a rehearsal of the COCO table generates, so that the
    detectors have COCO's 81 classes and the id -> label mapping sees COCO's gaps."""
    from ckd_lib.detection.models import COCO_CATEGORY_IDS

    return tuple({"id": int(i), "name": f"category_{i}", "supercategory": "shape"}
                 for i in COCO_CATEGORY_IDS)


def _palette(categories) -> tuple[dict, dict]:
    """(colour, kind) per category id: the three shapes' own, else spread over hue."""
    import colorsys

    colours, kinds = {}, {}
    for index, category in enumerate(categories):
        cid = category["id"]
        if categories == CATEGORIES:
            colours[cid], kinds[cid] = _COLOURS[cid], _KINDS[cid]
            continue
        r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 0.9)
        colours[cid] = (int(r * 255), int(g * 255), int(b * 255))
        kinds[cid] = ("square", "disc", "triangle")[index % 3]
    return colours, kinds
_SPLITS = (("train2017", 0), ("val2017", 1))
_MIN_OBJECT = 16
_MAX_TRIES = 50


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _polygon_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    rles = mask_util.frPyObjects([polygon], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """xyxy of the pixels of a mask, the right/bottom edges exclusive."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _draw_shape(rng: np.random.Generator, kind: str, height: int, width: int):
    """(full mask, polygon or None) of one shape ("square", "disc", "triangle") placed inside
    the image."""
    limit = min(height, width) // 2
    w = int(rng.integers(_MIN_OBJECT, limit + 1))
    h = int(rng.integers(_MIN_OBJECT, limit + 1))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    if kind == "disc":
        cy, cx = y0 + h / 2, x0 + w / 2
        ys, xs = np.mgrid[0:height, 0:width]
        inside = ((xs + 0.5 - cx) / (w / 2)) ** 2 + ((ys + 0.5 - cy) / (h / 2)) ** 2 <= 1.0
        return inside, None
    if kind == "square":
        polygon = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
    else:
        apex = x0 + int(rng.integers(0, w + 1))
        if rng.random() < 0.5:  # apex up or down
            polygon = [apex, y0, x0 + w, y0 + h, x0, y0 + h]
        else:
            polygon = [x0, y0, x0 + w, y0, apex, y0 + h]
    polygon = [float(v) for v in polygon]
    return _polygon_mask(polygon, height, width), polygon


def _place_objects(rng: np.random.Generator, height: int, width: int, max_objects: int,
                   categories=CATEGORIES):
    """Objects in painting order: dicts with category, full mask, polygon, colour."""
    colours, kinds = _palette(categories)
    wanted = int(rng.integers(1, max_objects + 1))
    objects: list[dict] = []
    for _ in range(wanted):
        category = int(rng.choice([c["id"] for c in categories]))
        for _try in range(_MAX_TRIES):
            mask, polygon = _draw_shape(rng, kinds[category], height, width)
            if mask.sum() == 0:
                continue
            box = _tight_box(mask)
            fits = True
            for other in objects:
                visible_after = other["visible"] & ~mask
                if (
                    _box_iou(box, other["box"]) > 0.5
                    or visible_after.sum() * 2 < other["mask"].sum()
                ):
                    fits = False
                    break
            if fits:
                break
        else:
            continue  # no room for this one; the image keeps fewer objects
        for other in objects:
            other["visible"] = other["visible"] & ~mask
        jitter = rng.integers(-20, 21, size=3)
        colour = np.clip(np.array(colours[category]) + jitter, 0, 255)
        objects.append(
            {"category": category, "mask": mask, "visible": mask.copy(), "box": box,
             "polygon": polygon, "colour": colour}
        )
    return objects


def _render(rng: np.random.Generator, params: dict):
    """One image (uint8 HxWx3) and its objects."""
    height = int(rng.integers(params["min_size"], params["max_size"] + 1))
    width = int(rng.integers(params["min_size"], params["max_size"] + 1))
    objects = _place_objects(rng, height, width, params["max_objects"],
                             _categories(params.get("categories", "shapes")))
    base = rng.integers(20, 90, size=3)
    image = np.broadcast_to(base, (height, width, 3)).astype(np.float64)
    for obj in objects:
        image[obj["mask"]] = obj["colour"]
    image += rng.normal(0.0, 12.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _split_json(root: Path, split: str, code: int, count: int, params: dict, first_id: int):
    images, annotations = [], []
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([params["seed"], code, index]))
        pixels, objects = _render(rng, params)
        image_id = first_id + index
        file_name = f"{image_id:012d}.png"
        atomic_write_bytes(image_dir / file_name, _png_bytes(pixels))
        height, width = pixels.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in objects:
            visible = obj["visible"]
            if not visible.any():  # cannot happen with the placement rule; kept as a guard
                continue
            x1, y1, x2, y2 = _tight_box(visible)
            occluded = not np.array_equal(visible, obj["mask"])
            if obj["polygon"] is not None and not occluded:
                segmentation = [obj["polygon"]]
            else:
                segmentation = _rle(visible)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category"],
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float(visible.sum()),
                "iscrowd": 0,
                "segmentation": segmentation,
            })
    return {
        "info": {
            "description": "ckd_lib generated shapes (COCO format)",
            "version": str(SHAPES_VERSION),
            "shapes_parameters": params,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in _categories(params.get("categories", "shapes"))],
    }


def _categories(name: str) -> tuple[dict, ...]:
    return coco_categories() if name == "coco" else CATEGORIES


def _existing_parameters(annotation_file: Path):
    """``(parameters, json)`` of an existing shapes json, None when there is none.

    Anything else there (real COCO, or a file that does not parse: ours are written atomically,
    so it is not ours) is refused rather than overwritten."""
    if not annotation_file.exists():
        return None
    try:
        data = json.loads(annotation_file.read_text())
    except (OSError, ValueError):
        data = None
    info = data.get("info") if isinstance(data, dict) else None
    params = info.get("shapes_parameters") if isinstance(info, dict) else None
    if params is None:
        raise FileExistsError(
            f"{annotation_file} exists and is not a generated shapes dataset; refusing to "
            f"overwrite it (delete it or choose another root)"
        )
    return params, data


def make_shapes_dataset(
    root: str | os.PathLike,
    *,
    num_train: int = 16,
    num_val: int = 8,
    min_size: int = 96,
    max_size: int = 160,
    max_objects: int = 3,
    seed: int = 0,
    categories: str = "shapes",
) -> Path:
    """Write (or find) the shapes dataset under ``root`` in the COCO 2017 layout; returns root.

    ``<root>/train2017/*.png``, ``<root>/val2017/*.png`` and
    ``<root>/annotations/instances_{train2017,val2017}.json``. ``categories``: "shapes" (the
    three above) or "coco" (COCO's 80 categories and ids, :func:`coco_categories`).
    """
    if categories not in ("shapes", "coco"):
        raise ValueError(f"categories must be 'shapes' or 'coco', got {categories!r}")
    _check_int("num_train", num_train, 1)
    _check_int("num_val", num_val, 1)
    _check_int("min_size", min_size, 2 * _MIN_OBJECT)
    _check_int("max_size", max_size, min_size)
    _check_int("max_objects", max_objects, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    root = Path(root).expanduser()
    params = {
        "version": SHAPES_VERSION, "num_train": num_train, "num_val": num_val,
        "min_size": min_size, "max_size": max_size, "max_objects": max_objects, "seed": seed,
    }
    if categories != "shapes":  # the three shapes' datasets keep the parameters they had
        params["categories"] = categories
    counts = {"train2017": (num_train, 1), "val2017": (num_val, num_train + 1)}

    files = {split: root / "annotations" / f"instances_{split}.json" for split, _ in _SPLITS}
    complete = True
    for split, _ in _SPLITS:
        existing = _existing_parameters(files[split])
        if existing is None or existing[0] != params:
            complete = False
            continue
        listed = existing[1].get("images", [])
        if not all((root / split / image["file_name"]).is_file() for image in listed):
            complete = False
    if complete:
        return root

    for split, code in _SPLITS:
        count, first_id = counts[split]
        data = _split_json(root, split, code, count, params, first_id)
        # The json is written last, so its presence means that its images are all there.
        atomic_write_json(files[split], data)
    return root
