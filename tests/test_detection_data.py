"""COCO-format data for detection: the generated shapes set, the COCO reader, the batch sampler.

Truth comes from outside the code under test wherever possible: boxes from the json by hand,
masks decoded by pycocotools, flips by torch.flip, permutations by counting.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from ckd_lib.data.errors import DatasetNotFoundError
from ckd_lib.detection.coco import (
    CocoDetection,
    check_coco_root,
    coco_paths,
    collate_detection,
)
from ckd_lib.detection.sampler import TrainingBatches
from ckd_lib.detection.shapes import make_shapes_dataset

# pycocotools' own decode() trips numpy 2's copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Category id -> label, written out by hand: ascending ids 1, 3, 7 become 1, 2, 3.
EXPECTED_LABEL = {1: 1, 3: 2, 7: 3}


def load_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def tight_box_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, seed=0)


# --- generated shapes dataset -----------------------------------------------------------------


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_shapes_annotations_agree_with_their_masks(shapes_root, split):
    coco = load_coco(shapes_root / "annotations" / f"instances_{split}.json")
    assert {c["id"] for c in coco.dataset["categories"]} == {1, 3, 7}
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    assert names == {1: "square", 3: "disc", 7: "triangle"}
    anns = coco.dataset["annotations"]
    assert anns, "the generated split has no annotations"
    kinds = Counter("rle" if isinstance(a["segmentation"], dict) else "polygon" for a in anns)
    assert kinds["polygon"] > 0  # both decoding paths are exercised
    for ann in anns:
        mask = coco.annToMask(ann)
        assert ann["bbox"] == tight_box_xywh(mask)
        assert ann["area"] == float(mask.sum())
        assert ann["iscrowd"] == 0
        if isinstance(ann["segmentation"], dict):
            assert isinstance(ann["segmentation"]["counts"], str)
        if ann["category_id"] == 3:  # discs are always RLE
            assert isinstance(ann["segmentation"], dict)
    for image in coco.dataset["images"]:
        with Image.open(shapes_root / split / image["file_name"]) as img:
            assert img.format == "PNG"
            assert img.size == (image["width"], image["height"])
            assert 96 <= img.width <= 160 and 96 <= img.height <= 160


def test_shapes_pixels_have_their_class_colour(shapes_root):
    coco = load_coco(shapes_root / "annotations" / "instances_train2017.json")
    dominant = {1: 0, 3: 1, 7: 2}  # square red, disc green, triangle blue
    seen = set()
    for ann in coco.dataset["annotations"]:
        image = coco.imgs[ann["image_id"]]
        with Image.open(shapes_root / "train2017" / image["file_name"]) as img:
            pixels = np.asarray(img.convert("RGB")).astype(float)
        mask = coco.annToMask(ann).astype(bool)
        mean = pixels[mask].mean(axis=0)
        channel = dominant[ann["category_id"]]
        others = [c for c in range(3) if c != channel]
        assert mean[channel] > mean[others].max() + 60
        background = pixels[~np.any(
            [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[ann["image_id"]]], axis=0
        )]
        assert background.mean() < 110
        seen.add(ann["category_id"])
    assert seen == {1, 3, 7}


def _tree_bytes(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_shapes_are_deterministic(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_train=3, num_val=2, seed=5)
    b = make_shapes_dataset(tmp_path / "b", num_train=3, num_val=2, seed=5)
    c = make_shapes_dataset(tmp_path / "c", num_train=3, num_val=2, seed=6)
    files_a, files_b, files_c = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert len(files_a) == 3 + 2 + 2
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    for name in files_a:
        assert files_a[name] != files_c[name], name


def test_shapes_is_idempotent_and_regenerates_on_new_parameters(tmp_path):
    root = make_shapes_dataset(tmp_path, num_train=2, num_val=1)
    annotation = root / "annotations" / "instances_train2017.json"
    image = next((root / "train2017").glob("*.png"))
    before = (annotation.stat().st_mtime_ns, image.stat().st_mtime_ns)
    assert make_shapes_dataset(tmp_path, num_train=2, num_val=1) == root
    assert (annotation.stat().st_mtime_ns, image.stat().st_mtime_ns) == before

    make_shapes_dataset(tmp_path, num_train=3, num_val=1)
    data = json.loads(annotation.read_text())
    assert len(data["images"]) == 3
    assert data["info"]["shapes_parameters"]["num_train"] == 3

    # A deleted image makes the set incomplete: it is written again.
    image.unlink()
    make_shapes_dataset(tmp_path, num_train=3, num_val=1)
    assert image.is_file()


def test_shapes_never_overwrite_other_annotations(tmp_path):
    foreign = tmp_path / "annotations" / "instances_train2017.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"info": {"description": "real COCO"}, "images": []}))
    with pytest.raises(FileExistsError, match="instances_train2017.json"):
        make_shapes_dataset(tmp_path)
    assert json.loads(foreign.read_text())["info"] == {"description": "real COCO"}


def test_shapes_reject_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="max_size"):
        make_shapes_dataset(tmp_path, min_size=100, max_size=90)
    with pytest.raises(ValueError, match="num_train"):
        make_shapes_dataset(tmp_path, num_train=0)


# --- CocoDetection on the shapes set ------------------------------------------------------------


def test_labels_follow_category_id_order_and_boxes_are_xyxy(shapes_root):
    ds = CocoDetection(shapes_root, "train2017", train=True)
    assert ds.category_ids == [1, 3, 7]
    assert ds.category_names == ["square", "disc", "triangle"]
    assert [ds.label_of(c) for c in (1, 3, 7)] == [1, 2, 3]
    assert [ds.category_of(k) for k in (1, 2, 3)] == [1, 3, 7]
    with pytest.raises(ValueError, match="1..3"):
        ds.category_of(0)
    with pytest.raises(ValueError, match="unknown category id 2"):
        ds.label_of(2)

    data = json.loads((shapes_root / "annotations" / "instances_train2017.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert ds.image_ids == sorted(by_image)
    for index, image_id in enumerate(ds.image_ids):
        image, target = ds[index]
        anns = by_image[image_id]
        expected_boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns]
        assert target["image_id"] == image_id
        assert target["boxes"].dtype == torch.float32
        assert target["boxes"].tolist() == expected_boxes
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == [EXPECTED_LABEL[a["category_id"]] for a in anns]
        assert target["area"].tolist() == [a["area"] for a in anns]
        assert target["iscrowd"].tolist() == [0] * len(anns)
        info = next(i for i in data["images"] if i["id"] == image_id)
        assert image.shape == (3, info["height"], info["width"])
        assert image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        with Image.open(shapes_root / "train2017" / info["file_name"]) as img:
            raw = torch.from_numpy(np.asarray(img.convert("RGB")).copy())
        assert torch.equal((image * 255).round().to(torch.uint8), raw.permute(2, 0, 1))


def test_flip_mirrors_image_boxes_and_masks(shapes_root):
    ds = CocoDetection(shapes_root, "val2017", train=False, masks=True)
    for index in range(len(ds)):
        image, target = ds[index]
        flipped, flipped_target = ds[(index, True)]
        width = image.shape[-1]
        assert torch.equal(flipped, torch.flip(image, dims=[-1]))
        x1, y1, x2, y2 = target["boxes"].unbind(1)
        expected = torch.stack((width - x2, y1, width - x1, y2), dim=1)
        assert torch.equal(flipped_target["boxes"], expected)
        assert torch.equal(flipped_target["masks"], torch.flip(target["masks"], dims=[-1]))
        assert torch.equal(flipped_target["labels"], target["labels"])
        for mask, box in zip(flipped_target["masks"], flipped_target["boxes"], strict=True):
            x, y, w, h = tight_box_xywh(mask.numpy())
            assert [x, y, x + w, y + h] == box.tolist()
        assert ds[(index, False)][1]["boxes"].tolist() == target["boxes"].tolist()


def test_masks_decode_polygons_and_rle(shapes_root):
    ds = CocoDetection(shapes_root, "val2017", train=False, masks=True)
    coco = load_coco(shapes_root / "annotations" / "instances_val2017.json")
    for index, image_id in enumerate(ds.image_ids):
        _, target = ds[index]
        anns = coco.imgToAnns[image_id]
        assert target["masks"].dtype == torch.uint8
        expected = np.stack([coco.annToMask(a) for a in anns])
        assert np.array_equal(target["masks"].numpy(), expected)
        assert target["masks"].sum(dim=(1, 2)).tolist() == [a["area"] for a in anns]


def test_limit_and_negative_index(shapes_root):
    full = CocoDetection(shapes_root, "val2017", train=False)
    short = CocoDetection(shapes_root, "val2017", train=False, limit=2)
    assert len(short) == 2 and short.image_ids == full.image_ids[:2]
    assert short[-1][1]["image_id"] == full.image_ids[1]
    with pytest.raises(IndexError):
        short[2]
    with pytest.raises(ValueError, match="limit"):
        CocoDetection(shapes_root, "val2017", train=False, limit=0)


def test_collate_keeps_lists(shapes_root):
    ds = CocoDetection(shapes_root, "val2017", train=False)
    images, targets = collate_detection([ds[0], ds[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert [t["image_id"] for t in targets] == ds.image_ids[:2]
    assert images[0].shape == ds[0][0].shape


# --- crowd, degenerate and empty annotations (hand-written COCO json) ---------------------------


@pytest.fixture()
def handmade_root(tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = [
        {"id": 10, "file_name": "a.png", "height": 30, "width": 40},
        {"id": 11, "file_name": "b.png", "height": 20, "width": 25},  # no annotation
        {"id": 12, "file_name": "c.png", "height": 20, "width": 25},  # only a crowd region
    ]
    for info in images:
        Image.new("RGB", (info["width"], info["height"]), (10, 20, 30)).save(
            root / "val2017" / info["file_name"]
        )

    def poly(x, y, w, h):
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]

    crowd_rle = {"size": [30, 40], "counts": [30 * 20, 30 * 5, 30 * 15]}  # columns 20..24
    anns = [
        {"id": 1, "image_id": 10, "category_id": 5, "bbox": [2, 3, 10, 8],
         "area": 80.0, "iscrowd": 0, "segmentation": poly(2, 3, 10, 8)},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [20, 0, 5, 30],
         "area": 150.0, "iscrowd": 1, "segmentation": crowd_rle},
        {"id": 3, "image_id": 10, "category_id": 2, "bbox": [5, 5, 1, 10],  # 1 px wide
         "area": 10.0, "iscrowd": 0, "segmentation": poly(5, 5, 1, 10)},
        {"id": 4, "image_id": 10, "category_id": 2, "bbox": [35, 20, 10, 20],  # sticks out
         "area": 50.0, "iscrowd": 0, "segmentation": poly(35, 20, 5, 10)},
        {"id": 5, "image_id": 10, "category_id": 5, "bbox": [50, 5, 5, 5],  # outside
         "area": 25.0, "iscrowd": 0, "segmentation": poly(36, 5, 3, 3)},
        {"id": 6, "image_id": 12, "category_id": 2, "bbox": [0, 0, 25, 20],
         "area": 500.0, "iscrowd": 1,
         "segmentation": {"size": [20, 25], "counts": [0, 500]}},
    ]
    categories = [{"id": 5, "name": "five", "supercategory": "x"},
                  {"id": 2, "name": "two", "supercategory": "x"}]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": categories}
    ))
    return root


def test_train_mode_drops_crowd_degenerate_and_empty(handmade_root):
    ds = CocoDetection(handmade_root, "val2017", train=True, masks=True)
    assert ds.category_ids == [2, 5]
    assert ds.image_ids == [10]  # 11 has no annotation, 12 only a crowd region
    _, target = ds[0]
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [35, 20, 40, 30]]  # clipped to 40x30
    assert target["labels"].tolist() == [2, 1]  # category 5 -> 2, category 2 -> 1
    assert target["iscrowd"].tolist() == [0, 0]
    assert target["area"].tolist() == [80.0, 50.0]
    assert target["masks"].shape == (2, 30, 40)
    assert target["masks"][0].sum() == 80


def test_eval_mode_keeps_every_image_and_annotation(handmade_root):
    ds = CocoDetection(handmade_root, "val2017", train=False, masks=True)
    assert ds.image_ids == [10, 11, 12]
    _, target = ds[0]
    assert target["iscrowd"].tolist() == [0, 1, 0, 0, 0]
    assert target["labels"].tolist() == [2, 1, 1, 1, 2]
    assert target["boxes"][1].tolist() == [20, 0, 25, 30]
    assert target["masks"].shape == (5, 30, 40)
    crowd = target["masks"][1]
    assert crowd[:, 20:25].all() and crowd.sum() == 30 * 5  # uncompressed RLE decoded

    image, empty = ds[1]
    assert empty["image_id"] == 11
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    assert empty["area"].shape == (0,) and empty["iscrowd"].shape == (0,)
    assert empty["masks"].shape == (0, 20, 25) and empty["masks"].dtype == torch.uint8
    _, flipped_empty = ds[(1, True)]
    assert flipped_empty["boxes"].shape == (0, 4)
    assert image.shape == (3, 20, 25)


def test_image_size_mismatch_is_an_error(handmade_root):
    Image.new("RGB", (41, 30)).save(handmade_root / "val2017" / "a.png")
    ds = CocoDetection(handmade_root, "val2017", train=False)
    with pytest.raises(ValueError, match="41x30"):
        ds[0]


# --- layout errors ----------------------------------------------------------------------------


def test_missing_root_names_every_missing_path(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        CocoDetection(root, "val2017", train=False)
    message = str(info.value)
    image_dir, annotation_file = coco_paths(root, "val2017")
    assert image_dir == root / "val2017"
    assert annotation_file == root / "annotations" / "instances_val2017.json"
    assert str(image_dir) in message and str(annotation_file) in message
    assert "cocodataset.org/#download" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_split_names_only_what_is_missing(shapes_root, tmp_path):
    root = tmp_path / "partial"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(
        (shapes_root / "annotations" / "instances_val2017.json").read_text()
    )
    assert check_coco_root(root, ("val2017",)) == root
    with pytest.raises(DatasetNotFoundError) as info:
        check_coco_root(root)
    message = str(info.value)
    assert str(root / "train2017") in message
    assert str(root / "annotations" / "instances_train2017.json") in message
    assert str(root / "annotations" / "instances_val2017.json") not in message


def test_bad_split_names_accepted_splits(shapes_root):
    with pytest.raises(ValueError, match="train2017, val2017"):
        CocoDetection(shapes_root, "val2014", train=False)
    with pytest.raises(ValueError, match="'test'"):
        coco_paths(shapes_root, "test")


# --- TrainingBatches --------------------------------------------------------------------------


def _all(sampler):
    return list(sampler)


def test_batches_resume_where_they_stopped():
    full = _all(TrainingBatches(10, 4, seed=3, stop_iteration=12))
    assert len(full) == 12 and all(len(b) == 4 for b in full)
    for start in (0, 1, 5, 11, 12):
        resumed = TrainingBatches(10, 4, seed=3, start_iteration=start, stop_iteration=12)
        assert len(resumed) == 12 - start
        assert _all(resumed) == full[start:]
    for batch in full:
        for index, flip in batch:
            assert type(index) is int and type(flip) is bool


def test_rank_slices_make_up_the_global_batch():
    single = _all(TrainingBatches(7, 4, seed=1, stop_iteration=9))
    ranks = [_all(TrainingBatches(7, 4, seed=1, stop_iteration=9, rank=r, world_size=2))
             for r in range(2)]
    for i in range(9):
        assert len(ranks[0][i]) == len(ranks[1][i]) == 2
        assert ranks[0][i] + ranks[1][i] == single[i]


def test_each_epoch_is_a_permutation():
    num_images, batch = 9, 6  # batches straddle epochs
    items = [item for b in TrainingBatches(num_images, batch, seed=0, stop_iteration=6)
             for item in b]
    assert len(items) == 36
    epochs = [items[k:k + num_images] for k in range(0, 36, num_images)]
    for epoch in epochs:
        assert sorted(index for index, _ in epoch) == list(range(num_images))
    assert len({tuple(i for i, _ in e) for e in epochs}) > 1  # reshuffled each epoch
    flips = [flip for _, flip in items]
    assert any(flips) and not all(flips)


def test_seed_and_flip_switch():
    a = _all(TrainingBatches(50, 5, seed=0, stop_iteration=10))
    b = _all(TrainingBatches(50, 5, seed=1, stop_iteration=10))
    assert a != b
    plain = _all(TrainingBatches(50, 5, seed=0, stop_iteration=10, flip=False))
    assert all(flip is False for batch in plain for _, flip in batch)
    # Switching flips off leaves the order unchanged.
    assert [[i for i, _ in batch] for batch in plain] == [[i for i, _ in batch] for batch in a]


def test_sampler_feeds_a_dataloader(shapes_root):
    ds = CocoDetection(shapes_root, "train2017", train=True)
    sampler = TrainingBatches(len(ds), 2, seed=0, stop_iteration=3)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_detection)
    batches = list(loader)
    assert len(batches) == 3
    for (images, targets), items in zip(batches, sampler, strict=True):
        assert [t["image_id"] for t in targets] == [ds.image_ids[i] for i, _ in items]
        for image, (index, flip) in zip(images, items, strict=True):
            assert torch.equal(image, ds[(index, flip)][0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_images=10, images_per_batch=6, world_size=4), "images_per_batch=6.*world_size=4"),
        (dict(num_images=0, images_per_batch=2), "num_images"),
        (dict(num_images=10, images_per_batch=0), "images_per_batch"),
        (dict(num_images=10, images_per_batch=4, rank=2, world_size=2), "rank"),
        (dict(num_images=10, images_per_batch=4, start_iteration=6), "start_iteration=6"),
        (dict(num_images=10, images_per_batch=4, start_iteration=-1), "start_iteration"),
        (dict(num_images=10.0, images_per_batch=4), "num_images"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
    kwargs = {"seed": 0, "stop_iteration": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        TrainingBatches(**kwargs)


def test_shapes_never_overwrite_an_unreadable_json(tmp_path):
    broken = tmp_path / "annotations" / "instances_val2017.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(FileExistsError, match="instances_val2017.json"):
        make_shapes_dataset(tmp_path)
    assert broken.read_text() == "{not json"
