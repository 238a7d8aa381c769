"""COCO evaluation: results conversion and AP against values worked out by hand."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from ckd_lib.detection.coco import CocoDetection
from ckd_lib.detection.evaluate import (
    METRIC_NAMES,
    evaluate_coco,
    evaluate_predictions,
    to_coco_results,
)
from ckd_lib.detection.shapes import make_shapes_dataset

# pycocotools' own decode() trips numpy 2's copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco_from(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    root = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=6, seed=2)
    return CocoDetection(root, "val2017", train=False, masks=True)


def perfect_predictions(coco: COCO, label_of: dict[int, int]) -> dict[int, dict]:
    """Ground truth as predictions, built from the json (not from CocoDetection)."""
    predictions = {}
    for image_id in coco.getImgIds():
        anns = coco.imgToAnns[image_id]
        info = coco.imgs[image_id]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        masks = [coco.annToMask(a) for a in anns]
        predictions[image_id] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "scores": torch.ones(len(anns)),
            "masks": torch.from_numpy(
                np.stack(masks) if masks else np.zeros((0, info["height"], info["width"]))
            ).float()[:, None],
        }
    return predictions


def test_perfect_predictions_score_100(shapes_val):
    predictions = perfect_predictions(shapes_val.coco, {1: 1, 3: 2, 7: 3})
    metrics = evaluate_predictions(shapes_val, predictions, masks=True)
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == {*METRIC_NAMES, "AR100"}
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert metrics[iou_type][name] == pytest.approx(100.0, abs=1e-6), (iou_type, name)


def test_swapped_labels_are_not_perfect(shapes_val):
    # Categories 3 and 7 exchanged: a wrong id <-> label mapping must show in AP.
    predictions = perfect_predictions(shapes_val.coco, {1: 1, 3: 3, 7: 2})
    metrics = evaluate_predictions(shapes_val, predictions)
    assert metrics["bbox"]["AP"] < 90


def test_empty_results_give_zero_where_there_is_ground_truth(shapes_val):
    metrics = evaluate_coco(shapes_val.coco, [], iou_types=("bbox", "segm"))
    areas = [a["area"] for a in shapes_val.coco.dataset["annotations"]]
    has = {"APs": any(a < 32**2 for a in areas),
           "APm": any(32**2 <= a < 96**2 for a in areas),
           "APl": any(a >= 96**2 for a in areas)}
    for iou_type in ("bbox", "segm"):
        values = metrics[iou_type]
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert values[name] == 0.0
        for name, present in has.items():
            assert (values[name] == 0.0) if present else math.isnan(values[name]), name


# --- an AP that can be computed by hand -------------------------------------------------------


def iou_xyxy(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


GT1 = [100.0, 100.0, 150.0, 150.0]
GT2 = [300.0, 200.0, 350.0, 250.0]
PRED_ON_GT2 = [312.0, 200.0, 362.0, 250.0]  # shifted 12 px: IoU 38/62
FAR_AWAY = [500.0, 400.0, 550.0, 450.0]


@pytest.fixture()
def one_image_gt():
    def ann(i, box):
        x1, y1, x2, y2 = box
        return {"id": i, "image_id": 42, "category_id": 9, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]}

    return coco_from({
        "images": [{"id": 42, "file_name": "x.jpg", "height": 480, "width": 640}],
        "annotations": [ann(1, GT1), ann(2, GT2)],
        "categories": [{"id": 9, "name": "thing", "supercategory": "thing"}],
    })


def test_hand_computed_ap(one_image_gt):
    iou = iou_xyxy(GT2, PRED_ON_GT2)
    assert 0.60 < iou < 0.65
    assert iou_xyxy(GT1, FAR_AWAY) == iou_xyxy(GT2, FAR_AWAY) == 0.0
    predictions = {42: {
        "boxes": torch.tensor([GT1, FAR_AWAY, PRED_ON_GT2]),
        "labels": torch.tensor([1, 1, 1]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
    }}
    results = to_coco_results(predictions, [9])
    metrics = evaluate_coco(one_image_gt, results)["bbox"]

    # 101-point interpolated precision: thresholds 0.50, 0.55, 0.60 match the shifted box
    # (precision 1 up to recall 0.5, then 2/3); 0.65 .. 0.95 do not (precision 0 past 0.5).
    matched = (51 * 1.0 + 50 * (2 / 3)) / 101
    unmatched = 51 / 101
    per_threshold = [matched] * 3 + [unmatched] * 7
    assert metrics["AP"] == pytest.approx(100 * sum(per_threshold) / 10, abs=1e-6)
    assert metrics["AP50"] == pytest.approx((51 + 100 / 3) / 101 * 100, abs=1e-6)
    assert metrics["AP75"] == pytest.approx(51 / 101 * 100, abs=1e-6)
    assert metrics["APm"] == pytest.approx(metrics["AP"], abs=1e-6)
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APl"])
    assert metrics["AR100"] == pytest.approx(100 * (3 * 1.0 + 7 * 0.5) / 10, abs=1e-6)


def test_image_ids_restrict_the_evaluation(one_image_gt):
    dataset = copy.deepcopy(one_image_gt.dataset)
    dataset["images"].append({"id": 43, "file_name": "y.jpg", "height": 480, "width": 640})
    dataset["annotations"].append({**dataset["annotations"][0], "id": 3, "image_id": 43})
    gt = coco_from(dataset)
    results = to_coco_results({42: {"boxes": torch.tensor([GT1, GT2]),
                                    "labels": torch.tensor([1, 1]),
                                    "scores": torch.tensor([0.9, 0.8])}}, [9])
    assert evaluate_coco(gt, results, image_ids=[42])["bbox"]["AP"] == pytest.approx(100.0)
    everywhere = evaluate_coco(gt, results)["bbox"]
    assert everywhere["AR100"] == pytest.approx(100 * 2 / 3)  # image 43's object is missed


def test_evaluate_does_not_modify_results(one_image_gt):
    results = to_coco_results({42: {"boxes": torch.tensor([GT1]), "labels": torch.tensor([1]),
                                    "scores": torch.tensor([0.5])}}, [9])
    before = copy.deepcopy(results)
    evaluate_coco(one_image_gt, results)
    assert results == before


def test_bad_iou_type_and_unknown_images(one_image_gt):
    with pytest.raises(ValueError, match="'keypoints'.*bbox, segm"):
        evaluate_coco(one_image_gt, [], iou_types=("keypoints",))
    bogus = [{"image_id": 7, "category_id": 9, "bbox": [0, 0, 5, 5], "score": 1.0}]
    with pytest.raises(ValueError, match=r"\[7\]"):
        evaluate_coco(one_image_gt, bogus)
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco(one_image_gt, [{**bogus[0], "image_id": 42}], iou_types=("segm",))


# --- to_coco_results --------------------------------------------------------------------------


def test_to_coco_results_maps_labels_boxes_and_masks():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(3, 1, 20, 30, generator=generator)
    predictions = {5: {
        "boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.5, 1.5, 2.0, 3.0],
                               [1.0, 1.0, 29.0, 19.0]]),
        "labels": torch.tensor([3, 1, 2]),
        "scores": torch.tensor([0.9, 0.25, 0.5]),
        "masks": probabilities,
    }}
    results = to_coco_results(predictions, [1, 3, 7], masks=True)
    assert [r["category_id"] for r in results] == [7, 1, 3]
    assert [r["image_id"] for r in results] == [5, 5, 5]
    assert results[0]["bbox"] == [10.0, 20.0, 30.0, 40.0]
    assert results[1]["bbox"] == [0.5, 1.5, 1.5, 1.5]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.25, 0.5])
    json.loads(json.dumps(results))  # serialisable as it is
    for k, result in enumerate(results):
        rle = result["segmentation"]
        assert isinstance(rle["counts"], str) and rle["size"] == [20, 30]
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded, (probabilities[k, 0] > 0.5).numpy().astype(np.uint8))


def test_to_coco_results_rejects_background_and_unknown_labels():
    def prediction(label):
        return {1: {"boxes": torch.zeros(1, 4), "labels": torch.tensor([label]),
                    "scores": torch.ones(1)}}

    with pytest.raises(ValueError, match="label 0.*1..3"):
        to_coco_results(prediction(0), [1, 3, 7])
    with pytest.raises(ValueError, match="label 4"):
        to_coco_results(prediction(4), [1, 3, 7])
    assert to_coco_results({1: {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0),
                                "scores": torch.zeros(0),
                                "masks": torch.zeros(0, 1, 5, 5)}}, [1], masks=True) == []


def test_mask_ap_area_ranges_use_the_mask_area():
    # A false positive whose mask is small (20x20) but whose box is large (100x100) ranks first.
    # Mask AP's "small" range is defined on mask areas, so it counts there (APs = 50); taking the
    # area from the box would hide it from APs (100).
    gt = coco_from({
        "images": [{"id": 1, "file_name": "z.png", "height": 200, "width": 200}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [10, 10, 20, 20],
                         "area": 400.0, "iscrowd": 0,
                         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}],
        "categories": [{"id": 4, "name": "four", "supercategory": "x"}],
    })
    masks = torch.zeros(2, 1, 200, 200)
    masks[0, 0, 100:120, 100:120] = 1.0
    masks[1, 0, 10:30, 10:30] = 1.0
    results = to_coco_results({1: {"boxes": torch.tensor([[50.0, 50, 150, 150], [10, 10, 30, 30]]),
                                   "labels": torch.tensor([1, 1]),
                                   "scores": torch.tensor([0.95, 0.9]), "masks": masks}},
                              [4], masks=True)
    segm = evaluate_coco(gt, results, iou_types=("segm",))["segm"]
    assert segm["AP"] == pytest.approx(50.0, abs=1e-6)
    assert segm["APs"] == pytest.approx(50.0, abs=1e-6)
