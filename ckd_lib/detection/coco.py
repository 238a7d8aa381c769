"""MS-COCO 2017 detection data (boxes, and masks for Mask R-CNN) in its standard layout.

Why our own reader and not ``torchvision.datasets.CocoDetection``: torchvision's returns raw
annotation dicts and leaves the conversion (xywh -> xyxy, category id -> contiguous label,
polygon/RLE -> mask, dropping crowd and degenerate boxes) to its reference scripts, which are not
part of the installed package. Doing it here keeps one definition of the label space used by
training, distillation and evaluation:

* label 0 is the background, labels 1..K are the dataset's categories in ascending category-id
  order (COCO: K = 80, ids 1..90 with gaps), as in Detectron2 with the background moved first;
* ``label_of`` / ``category_of`` convert between them, and :mod:`ckd_lib.detection.evaluate`
  uses ``category_ids`` to write results back in COCO's ids.

Training follows Detectron2: images without a usable (non-crowd, wider and taller than one pixel)
annotation are skipped, and crowd and degenerate boxes are removed from the targets, because
torchvision's detectors cannot learn from a target without boxes and crowd regions are "ignore"
regions, not objects. Evaluation keeps every image and every annotation (targets are not used
there; pycocotools reads the json itself).

Horizontal flipping is done here rather than in a transform so that the flip bit comes from the
sampler (:class:`ckd_lib.detection.sampler.TrainingBatches`): the same iteration then sees the
same flipped images after a resume and in every process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ckd_lib.data.errors import DatasetFileError, missing_files_error

COCO_SPLITS = ("train2017", "val2017")
COCO_HOW_TO = (
    "download train2017.zip, val2017.zip and annotations_trainval2017.zip from "
    "https://cocodataset.org/#download and unpack them so that the root holds "
    "train2017/, val2017/ and annotations/instances_train2017.json, "
    "annotations/instances_val2017.json"
)


def _check_split(split: str) -> str:
    if split not in COCO_SPLITS:
        raise ValueError(f"unknown COCO split {split!r}; accepted: {', '.join(COCO_SPLITS)}")
    return split


def coco_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of one split in the standard COCO 2017 layout."""
    _check_split(split)
    root = Path(root).expanduser()
    return root / split, root / "annotations" / f"instances_{split}.json"


def check_coco_root(root: str | os.PathLike, splits: Sequence[str] = COCO_SPLITS) -> Path:
    """Fail before anything long starts when a split's images or annotations are missing.

    Every missing path is named at once (not only the first), so one look fixes the layout.
    Returns the root as a Path.
    """
    if isinstance(splits, str):
        splits = (splits,)
    missing: list[Path] = []
    for split in splits:
        image_dir, annotation_file = coco_paths(root, split)
        if not image_dir.is_dir():
            missing.append(image_dir)
        if not annotation_file.is_file():
            missing.append(annotation_file)
    if missing:
        raise missing_files_error("MS-COCO 2017", missing, COCO_HOW_TO) from None
    return Path(root).expanduser()


def _quiet_coco(annotation_file: Path):
    """The annotation file through pycocotools (which prints progress on load; a library should
    not write to stdout), checked first: a truncated or malformed file, or an annotation with no
    usable box or an unknown category or image, is a DatasetFileError naming the file and the
    annotation, not a KeyError from deep inside training."""
    from pycocotools.coco import COCO

    try:
        data = json.loads(annotation_file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetFileError(f"{annotation_file}: not valid JSON, truncated or corrupt "
                               f"({error})") from None
    check_annotations(data, annotation_file)
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = data
        coco.createIndex()
    return coco


def check_annotations(data, source: Path | str) -> None:
    """Raise a DatasetFileError on the first thing a COCO instances file must not have."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in
                                             ("images", "annotations", "categories")):
        raise DatasetFileError(f"{source}: not a COCO instances file (it needs lists 'images', "
                               "'annotations' and 'categories')")
    try:
        categories = {int(c["id"]) for c in data["categories"]}
        images = {int(i["id"]) for i in data["images"]
                  if i["file_name"] and int(i["width"]) > 0 and int(i["height"]) > 0}
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetFileError(f"{source}: an image or category entry lacks or mistypes "
                               f"{error} (images need id, file_name, width, height; categories "
                               "need id, name)") from None
    if len(images) != len(data["images"]):
        raise DatasetFileError(f"{source}: an image entry has an empty file_name or a size <= 0")
    for ann in data["annotations"]:
        where = f"{source}: annotation {ann.get('id', '?') if isinstance(ann, dict) else ann!r}"
        if not isinstance(ann, dict):
            raise DatasetFileError(f"{where} is not a mapping")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) for v in box)):
            raise DatasetFileError(f"{where} has bbox={box!r}; expected [x, y, width, height]")
        if ann.get("category_id") not in categories:
            raise DatasetFileError(f"{where} has category_id={ann.get('category_id')!r}, which "
                                   f"is not among the file's categories {sorted(categories)}")
        if ann.get("image_id") not in images:
            raise DatasetFileError(f"{where} has image_id={ann.get('image_id')!r}, which is not "
                                   "among the file's images")


def _usable(ann: dict) -> bool:
    """An annotation a detector can be trained on: not crowd, more than one pixel each way."""
    _, _, w, h = ann["bbox"]
    return not ann.get("iscrowd", 0) and w > 1 and h > 1


class CocoDetection(Dataset):
    """One COCO split as ``(image, target)`` pairs in torchvision's detection format.

    ``image``: float32 [3, H, W] RGB in [0, 1] (the detector normalises it itself).
    ``target``: ``boxes`` float32 [N, 4] xyxy in pixels, ``labels`` int64 [N] (1..K),
    ``image_id`` int, ``area`` float32 [N], ``iscrowd`` int64 [N] and, with ``masks=True``,
    ``masks`` uint8 [N, H, W].

    An item is an index, or ``(index, flip)`` as yielded by ``TrainingBatches``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        train: bool,
        masks: bool = False,
        limit: int | None = None,
    ) -> None:
        _check_split(split)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        self.root = check_coco_root(root, (split,))
        self.split = split
        self.train = bool(train)
        self.masks = bool(masks)
        self.image_dir, self.annotation_file = coco_paths(self.root, split)
        self.coco = _quiet_coco(self.annotation_file)

        self.category_ids: list[int] = sorted(int(c) for c in self.coco.getCatIds())
        self.category_names: list[str] = [self.coco.cats[c]["name"] for c in self.category_ids]
        self._label = {cat: i + 1 for i, cat in enumerate(self.category_ids)}

        image_ids = sorted(int(i) for i in self.coco.getImgIds())
        if self.train:
            image_ids = [
                i for i in image_ids if any(_usable(a) for a in self.coco.imgToAnns.get(i, []))
            ]
        if limit is not None:
            image_ids = image_ids[:limit]
        self.image_ids: list[int] = image_ids

    @property
    def num_classes(self) -> int:
        """Categories plus the background (the detectors' ``num_classes``)."""
        return len(self.category_ids) + 1

    def label_of(self, category_id: int) -> int:
        """Contiguous label (1..K) of a COCO category id."""
        try:
            return self._label[int(category_id)]
        except KeyError:
            raise ValueError(
                f"unknown category id {category_id!r}; accepted: {self.category_ids}"
            ) from None

    def category_of(self, label: int) -> int:
        """COCO category id of a contiguous label (1..K; 0 is the background)."""
        label = int(label)
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(
                f"label {label} has no category; accepted labels: 1..{len(self.category_ids)}"
            )
        return self.category_ids[label - 1]

    def __len__(self) -> int:
        return len(self.image_ids)

    def _parse_item(self, item) -> tuple[int, bool]:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"item must be an index or (index, flip), got {item!r}")
            index, flip = item
        else:
            index, flip = item, False
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return index % len(self), bool(flip)

    def _read_image(self, info: dict) -> torch.Tensor:
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except FileNotFoundError:
            raise DatasetFileError(f"{path}: listed in {self.annotation_file} but missing") \
                from None
        except (OSError, SyntaxError, ValueError) as error:  # PIL: truncated, not an image
            raise DatasetFileError(f"{path}: cannot be decoded ({error})") from None
        height, width = rgb.shape[:2]
        if (height, width) != (info["height"], info["width"]):
            # Masks are decoded at the annotated size; a mismatch would misalign them.
            raise DatasetFileError(
                f"{path} is {width}x{height} pixels but its annotation says "
                f"{info['width']}x{info['height']}"
            )
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, item) -> tuple[torch.Tensor, dict]:
        index, flip = self._parse_item(item)
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = self._read_image(info)
        height, width = image.shape[-2:]

        boxes, labels, areas, crowd, masks = [], [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.train and not _usable(ann):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if self.train and (x2 <= x1 or y2 <= y1):
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.label_of(ann["category_id"]))
            areas.append(float(ann.get("area", w * h)))
            crowd.append(int(ann.get("iscrowd", 0)))
            if self.masks:
                masks.append(self.coco.annToMask(ann))

        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": int(image_id),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        }
        if self.masks:
            if masks:
                target["masks"] = torch.from_numpy(np.stack(masks).astype(np.uint8))
            else:
                target["masks"] = torch.zeros((0, height, width), dtype=torch.uint8)

        if flip:
            image = image.flip(-1)
            boxes_t = target["boxes"]
            target["boxes"] = torch.stack(
                (width - boxes_t[:, 2], boxes_t[:, 1], width - boxes_t[:, 0], boxes_t[:, 3]),
                dim=1,
            )
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]):
    """Detection images differ in size, so a batch is two lists (torchvision's model input)."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
