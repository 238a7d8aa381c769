"""COCO box and mask AP with pycocotools, from torchvision-style predictions.

Why pycocotools and not a re-implementation (e.g. torchmetrics): the paper's detection table is
COCO AP as ``COCOeval`` computes it (101-point interpolated precision, maxDets 100, COCO's area
ranges); any other implementation would need to be shown equal first.

Conventions this module fixes:

* Predictions carry contiguous labels 1..K (0 = background); ``category_ids[label - 1]`` turns
  them back into the dataset's category ids (see :mod:`ckd_lib.detection.coco`).
* Masks are probabilities at the image size; they are binarised at 0.5 (as torchvision's and
  Detectron2's evaluators do) and RLE-encoded with ``counts`` as str, so results are JSON.
* Metrics are percentages. An area range without ground truth has no AP: COCOeval reports -1,
  returned here as NaN so that it cannot be averaged or plotted as -100.
* Mask AP is computed from results without their ``bbox`` (as Detectron2 does): pycocotools then
  takes each detection's area from its mask, which is what the area ranges (APs/APm/APl) of
  mask AP are defined on.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")
_AR100_INDEX = 8  # COCOeval.stats: AR with maxDets=100 over all areas


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_coco_results(
    predictions: Mapping[int, dict],
    category_ids: Sequence[int],
    *,
    masks: bool = False,
) -> list[dict]:
    """COCO results json (one dict per detection) from ``{image_id: torchvision output}``."""
    from pycocotools import mask as mask_util

    category_ids = [int(c) for c in category_ids]
    results: list[dict] = []
    for image_id, prediction in predictions.items():
        boxes = _numpy(prediction["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = _numpy(prediction["labels"]).astype(np.int64).reshape(-1)
        scores = _numpy(prediction["scores"]).astype(np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels and "
                f"{len(scores)} scores; they must have one entry per detection"
            )
        bad = labels[(labels < 1) | (labels > len(category_ids))]
        if len(bad):
            raise ValueError(
                f"image {image_id}: label {int(bad[0])} has no category; accepted labels: "
                f"1..{len(category_ids)} (0 is the background)"
            )
        rles = []
        if masks:
            if "masks" not in prediction:
                raise ValueError(f"image {image_id}: masks=True but the prediction has no masks")
            probabilities = _numpy(prediction["masks"])
            if probabilities.ndim != 4 or probabilities.shape[0] != len(boxes):
                raise ValueError(
                    f"image {image_id}: masks must be [N, 1, H, W] with N={len(boxes)}, "
                    f"got shape {tuple(probabilities.shape)}"
                )
            binary = (probabilities[:, 0] > 0.5).astype(np.uint8)
            if len(binary):
                rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for k in range(len(boxes)):
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            result = {
                "image_id": int(image_id),
                "category_id": category_ids[int(labels[k]) - 1],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(scores[k]),
            }
            if masks:
                rle = rles[k]
                result["segmentation"] = {
                    "size": [int(s) for s in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                }
            results.append(result)
    return results


def _empty_results(coco_gt):
    """A results COCO with no detections (``loadRes`` refuses an empty list), so that COCOeval
    still says which area ranges have ground truth (0) and which have none (-1 -> NaN)."""
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def _percent(value: float) -> float:
    return math.nan if value < 0 else float(value) * 100.0


def evaluate_coco(
    coco_gt,
    results: list[dict],
    *,
    iou_types: Sequence[str] = ("bbox",),
    image_ids: Sequence[int] | None = None,
) -> dict[str, dict[str, float]]:
    """``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": percent}}``.

    ``image_ids`` restricts the evaluation (e.g. to the images a quick run predicted); by
    default every ground-truth image counts, so an image without predictions lowers recall.
    ``results`` is not modified (pycocotools' ``loadRes`` edits the dicts it is given).
    """
    from pycocotools.cocoeval import COCOeval

    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"unknown iou type {iou_type!r}; accepted: {', '.join(IOU_TYPES)}")
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - known)
    if unknown:
        raise ValueError(
            f"results name image ids that the ground truth does not have: {unknown[:10]}"
        )
    if image_ids is not None:
        image_ids = sorted(int(i) for i in image_ids)
        missing = sorted(set(image_ids) - known)
        if missing:
            raise ValueError(f"image_ids not in the ground truth: {missing[:10]}")

    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        if iou_type == "segm":
            missing_masks = sum("segmentation" not in r for r in results)
            if missing_masks:
                raise ValueError(
                    f"segm evaluation needs a segmentation in every result; {missing_masks} "
                    f"of {len(results)} have none (use to_coco_results(..., masks=True))"
                )
            # Without bbox, loadRes takes the area from the mask (see the module docstring).
            own = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        else:
            own = [dict(r) for r in results]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(own) if own else _empty_results(coco_gt)
            evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats
        values = {name: _percent(stats[k]) for k, name in enumerate(METRIC_NAMES)}
        values["AR100"] = _percent(stats[_AR100_INDEX])
        metrics[iou_type] = values
    return metrics


def evaluate_predictions(dataset, predictions: Mapping[int, dict], *, masks: bool = False):
    """Box (and mask) AP of ``{image_id: prediction}`` on the images predicted, for a
    :class:`~ckd_lib.detection.coco.CocoDetection` (its ``coco`` and ``category_ids``)."""
    results = to_coco_results(predictions, dataset.category_ids, masks=masks)
    return evaluate_coco(
        dataset.coco,
        results,
        iou_types=("bbox", "segm") if masks else ("bbox",),
        image_ids=sorted(int(i) for i in predictions),
    )
