"""The detection distiller and engine: same proposals, falling losses, schedule, resume, skip."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FrozenBatchNorm2d

from ckd_lib.detection.coco import CocoDetection
from ckd_lib.detection.config import DetectionConfig, detection_methods, parse_iteration_schedule
from ckd_lib.detection.distill import DetectionDistiller, renormalise
from ckd_lib.detection.engine import evaluate_detector, lr_at, train_detection
from ckd_lib.detection.evaluate import evaluate_predictions
from ckd_lib.detection.models import build_detector, load_detector
from ckd_lib.detection.shapes import make_shapes_dataset

SIZES = dict(train_min_sizes=(64,), test_min_size=64, max_size=96)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, seed=3)


def batch():
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 100.0, 80.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[5.0, 5.0, 40.0, 40.0]]), "labels": torch.tensor([3])}]
    return images, targets


def calibrate_frozen_bn(model: torch.nn.Module) -> None:
    """Give an untrained backbone's frozen BNs the statistics of their inputs (one forward).

    With identity FrozenBN an untrained ResNet's activations grow layer by layer and SGD on it
    diverges; pretrained backbones do not have that problem. A pre-hook sets each BN's running
    mean and variance from the batch reaching it, in order, before it normalises.
    """
    def set_stats(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(set_stats) for m in model.backbone.modules()
               if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        inputs = model.transform([torch.rand(3, 96, 96), torch.rand(3, 96, 96)])[0].tensors
        model.backbone(inputs)
        for handle in handles:
            handle.remove()
        # and standardise the FPN's output convs: every level has mean 0 and spread 1
        levels = model.backbone(inputs)
        for block, level in zip(model.backbone.fpn.layer_blocks, levels.values(), strict=False):
            mean, spread = float(level.mean()), float(level.std())
            block[0].weight.div_(spread)
            block[0].bias.sub_(mean).div_(spread)


def models(student_backbone="resnet18", teacher_backbone="resnet18", roi_batch_per_image=512,
           **teacher_spec):
    torch.manual_seed(0)
    student = build_detector(student_backbone, num_classes=4, **SIZES,
                             roi_batch_per_image=roi_batch_per_image)
    teacher = build_detector(teacher_backbone, num_classes=4, **SIZES, **teacher_spec)
    calibrate_frozen_bn(student)
    calibrate_frozen_bn(teacher)
    return student, teacher


def test_teacher_equal_to_student_gives_equal_logits_on_the_sampled_proposals():
    student, _ = models()
    distiller = DetectionDistiller(student, copy.deepcopy(student), "CKD").train()
    torch.manual_seed(1)
    distiller(*batch())
    seen = distiller.last_logits
    # one row per sampled proposal (at most 512 per image), in the proposals' order
    assert seen["student"].shape == (sum(len(p) for p in seen["proposals"]), 4)
    assert all(len(p) <= 512 for p in seen["proposals"])
    torch.testing.assert_close(seen["teacher"], seen["student"], rtol=0, atol=0)


def test_teacher_logits_are_the_teachers_box_head_on_the_students_proposals():
    # A teacher with other input statistics (Detectron2's BGR 0-255 convention): its logits
    # must equal running the teacher by itself on the same resized images and the proposals.
    student, teacher = models(image_mean=(123.675 / 255, 116.28 / 255, 103.53 / 255),
                              image_std=(1 / 255, 1 / 255, 1 / 255))
    distiller = DetectionDistiller(student, teacher, "DKD").train()
    images, targets = batch()
    torch.manual_seed(1)
    distiller(images, targets)
    proposals = distiller.last_logits["proposals"]
    with torch.no_grad():
        teacher.transform.eval()  # test size == the only training size: same geometry
        resized, _ = teacher.transform(images)
        levels = teacher.backbone(resized.tensors)
        pooled = teacher.roi_heads.box_roi_pool(levels, proposals, resized.image_sizes)
        expected, _ = teacher.roi_heads.box_predictor(teacher.roi_heads.box_head(pooled))
    torch.testing.assert_close(distiller.last_logits["teacher"], expected, rtol=1e-4, atol=1e-3)
    # ... and they are not the student's (the check above can tell the two apart).
    assert not torch.allclose(expected, distiller.last_logits["student"], atol=1e-2)


def test_renormalise_equals_normalising_before_padding():
    torch.manual_seed(0)
    raw = [torch.rand(3, 20, 30), torch.rand(3, 32, 25)]
    mean_a, std_a = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    mean_b, std_b = (0.4, 0.5, 0.6), (1 / 255, 1 / 255, 1 / 255)

    def padded(mean, std):
        out = torch.zeros(2, 3, 32, 32)
        for i, im in enumerate(raw):
            out[i, :, : im.shape[1], : im.shape[2]] = (
                (im - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
        return out

    batch_a = ImageList(padded(mean_a, std_a), [(20, 30), (32, 25)])
    torch.testing.assert_close(renormalise(batch_a, mean_a, std_a, mean_b, std_b),
                               padded(mean_b, std_b), rtol=1e-5, atol=1e-4)
    assert renormalise(batch_a, mean_a, std_a, mean_a, std_a) is batch_a.tensors


@pytest.mark.parametrize("method", detection_methods())
def test_a_few_steps_of_each_method_lower_its_loss(method):
    student, teacher = models(roi_batch_per_image=64)  # 64 RoIs per image: a quick CPU test
    distiller = DetectionDistiller(student, None if method == "baseline" else teacher,
                                   method).train()
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad],
                                lr=0.01)
    images, targets = batch()
    totals = []
    for _ in range(5):
        torch.manual_seed(7)  # the same proposals each step: only the weights change
        losses = distiller(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    expected_terms = {"baseline": set(), "KD": {"loss_kd"}, "DKD": {"loss_dkd"},
                      "CKD": {"loss_ckd"}, "ReviewKD": {"loss_reviewkd"}}
    for term in method.split("+"):
        assert expected_terms[term] <= set(losses)
    assert totals[-1] < 0.95 * totals[0], totals


def test_mask_rcnn_distiller_adds_the_mask_loss():
    torch.manual_seed(0)
    student = build_detector("resnet18", kind="mask_rcnn", num_classes=4, **SIZES)
    distiller = DetectionDistiller(student, copy.deepcopy(student), "ReviewKD+CKD").train()
    images, targets = batch()
    for image, target in zip(images, targets, strict=True):
        masks = torch.zeros(len(target["boxes"]), *image.shape[-2:], dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, target["boxes"].int().tolist(), strict=True):
            m[y1:y2, x1:x2] = 1
        target["masks"] = masks
    losses = distiller(images, targets)
    assert {"loss_mask", "loss_ckd", "loss_reviewkd"} <= set(losses)
    # ReviewKD between identical models still has untrained connectors: a positive loss.
    assert float(losses["loss_reviewkd"]) > 0


def test_distiller_refuses_bad_setups():
    student, teacher = models()
    with pytest.raises(ValueError, match="'FitNet' is not one of baseline, KD"):
        DetectionDistiller(student, teacher, "FitNet")
    with pytest.raises(ValueError, match="needs a teacher"):
        DetectionDistiller(student, None, "CKD")
    with pytest.raises(ValueError, match=r"\['cl_weight'\].*accepted"):
        DetectionDistiller(student, teacher, "CKD", {"cl_weight": 10})
    other = build_detector("resnet18", num_classes=9, **SIZES)
    with pytest.raises(ValueError, match="label space"):
        DetectionDistiller(student, other, "KD")


def test_warmup_multistep_schedule_matches_detectron2_by_hand():
    config = DetectionConfig(data_root=".", student="resnet18", lr=0.02, warmup_iterations=1000,
                             warmup_factor=0.001, milestones=(60000, 80000), iterations=90000)
    assert lr_at(config, 0) == pytest.approx(0.02 * 0.001)
    assert lr_at(config, 500) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lr_at(config, 1000) == pytest.approx(0.02)
    assert lr_at(config, 59999) == pytest.approx(0.02)
    assert lr_at(config, 60000) == pytest.approx(0.002)
    assert lr_at(config, 80000) == pytest.approx(0.0002)
    assert parse_iteration_schedule("360k_iters_steps_240k_320k") == (360000, (240000, 320000))


def test_recipe_configs_follow_the_recipes_and_scale():
    cell = DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root=".")
    assert (cell.teacher, cell.student, cell.iterations, cell.milestones, cell.lr,
            cell.images_per_batch) == ("resnet101", "resnet18", 360000, (240000, 320000), 0.01, 4)
    assert cell.loss["ckd_weight"] == 0.1 and cell.loss["reviewkd_weight"] == 1.2
    matched = DetectionConfig.from_recipe("R101", "R18", "DKD", data_root=".",
                                          iterations=360000)
    assert matched.milestones == (240000, 320000)
    mv2 = DetectionConfig.from_recipe("R50", "MobileNetV2", "ReviewKD+CKD", data_root=".")
    assert mv2.teacher_checkpoint == "torchvision" and mv2.loss["reviewkd_weight"] == 2.0
    # execution options do not change the run's identity; the seed does
    moved = copy.deepcopy(cell)
    moved.device, moved.workers, moved.out_dir = "cuda", 9, "elsewhere"
    assert moved.run_id() == cell.run_id()
    reseeded = copy.deepcopy(cell)
    reseeded.seed = 1
    assert reseeded.config_hash() != cell.config_hash()


def small_config(root: Path, out: Path, **changes) -> DetectionConfig:
    values = dict(data_root=str(root), student="resnet18", student_weights=None,
                  method="ReviewKD+CKD", teacher="resnet18", teacher_checkpoint="untrained",
                  iterations=4, milestones=(3,), lr=0.01, warmup_iterations=2,
                  images_per_batch=2, train_min_sizes=(80, 96), test_min_size=96, max_size=128,
                  device="cpu", amp="off", workers=0, checkpoint_every=2, log_every=1,
                  out_dir=str(out), val_limit=2)
    values.update(changes)
    return DetectionConfig(**values)


def test_resumed_run_equals_uninterrupted_and_finished_runs_are_skipped(shapes_root, tmp_path):
    whole = train_detection(small_config(shapes_root, tmp_path / "a"))
    assert whole["status"] == "complete" and whole["iterations_done"] == 4
    partial = train_detection(small_config(shapes_root, tmp_path / "b"), stop_after=2)
    assert partial["status"] == "running" and partial["iterations_done"] == 2
    resumed = train_detection(small_config(shapes_root, tmp_path / "b"))
    assert resumed["status"] == "complete"
    a = load_detector(tmp_path / "a" / whole["run_id"] / "model_last.pth").state_dict()
    b = load_detector(tmp_path / "b" / resumed["run_id"] / "model_last.pth").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # byte for byte (the record's sha256 confirms a resume), with the terms' connectors kept
    files = [tmp_path / d / whole["run_id"] / "model_last.pth" for d in ("a", "b")]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert whole["model"]["sha256"] == resumed["model"]["sha256"]
    assert "reviewkd" in torch.load(files[0], weights_only=True)["objective"]
    assert [e["loss"] for e in whole["train_log"]] == [e["loss"] for e in resumed["train_log"]]
    # the record points at everything the report needs
    record_file = tmp_path / "a" / whole["run_id"] / "record.json"
    stored = json.loads(record_file.read_text())
    assert stored["task"] == "detection" and set(stored["last"]) >= {"AP", "AP50", "APs"}
    assert stored["teacher"]["checkpoint"] == "untrained" and "metrics" in stored["teacher"]
    before = record_file.stat().st_mtime_ns
    again = train_detection(small_config(shapes_root, tmp_path / "a"))
    assert again["run_id"] == whole["run_id"] and record_file.stat().st_mtime_ns == before


def test_bad_configs_fail_before_any_work(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="'FitNet' is not one of"):
        small_config(shapes_root, tmp_path, method="FitNet").validate()
    with pytest.raises(ValueError, match="set teacher=None"):
        small_config(shapes_root, tmp_path, method="baseline").validate()
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        small_config(shapes_root, tmp_path, teacher_checkpoint="nowhere.pth").validate()
    with pytest.raises(FileNotFoundError, match="no_coco_here"):
        small_config(tmp_path / "no_coco_here", tmp_path).validate()
    with pytest.raises(ValueError, match="milestones"):
        small_config(shapes_root, tmp_path, milestones=(5,)).validate()
    with pytest.raises(ValueError, match="resnet101 detectors only|resnet50 detectors only"):
        small_config(shapes_root, tmp_path, teacher_checkpoint="torchvision").validate()
    assert not list(tmp_path.iterdir())


def test_streamed_evaluation_equals_scoring_all_predictions_at_once(shapes_root):
    # evaluate_detector turns each batch into COCO entries (mask RLE) as it goes; the score
    # must equal pycocotools on the full predictions collected first.
    val = CocoDetection(shapes_root, "val2017", train=False, masks=True)
    torch.manual_seed(0)
    model = build_detector("resnet18", kind="mask_rcnn", num_classes=val.num_classes,
                           **SIZES).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep its low-score boxes
    with torch.no_grad():
        full = {int(target["image_id"]): model([image])[0]
                for image, target in (val[i] for i in range(len(val)))}
    assert sum(len(p["boxes"]) for p in full.values()) > 0
    expected = evaluate_predictions(val, full, masks=True)
    # one image per batch on both sides: batching pads images, which changes the outputs
    streamed = evaluate_detector(model, val, torch.device("cpu"), images_per_batch=1)
    assert streamed["images"] == len(val)
    for iou_type in ("bbox", "segm"):
        for metric, value in expected[iou_type].items():
            got = streamed[iou_type][metric]
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value), metric
