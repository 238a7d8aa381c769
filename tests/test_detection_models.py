"""Detectors: sizes against torchvision's own builders, weight loading, the aligned pooler."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign, roi_align

from ckd_lib.detection.models import (
    COCO_CATEGORY_IDS,
    AlignedMultiScaleRoIAlign,
    DetectorSpec,
    build_detector,
    coco91_to_81,
    load_backbone_weights,
    load_detector,
)
from ckd_lib.results import atomic_torch_save

SMALL = dict(train_min_sizes=(64,), test_min_size=64, max_size=96)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_faster_rcnn_r50_has_torchvisions_documented_size_and_keys():
    # torchvision documents 41,755,286 parameters for fasterrcnn_resnet50_fpn (91 classes).
    ours = build_detector("resnet50", num_classes=91)
    assert n_params(ours) == 41_755_286
    theirs = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
                                                                  weights_backbone=None)
    # Untrained, torchvision uses BatchNorm2d (with a counter buffer); trained, FrozenBN as ours.
    state = {k: v for k, v in theirs.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    assert set(ours.state_dict()) == set(state)
    ours.load_state_dict(state, strict=True)


def test_mask_rcnn_r50_matches_torchvision_keys_and_size():
    ours = build_detector("resnet50", kind="mask_rcnn", num_classes=91)
    assert n_params(ours) == 44_401_393  # torchvision's documented maskrcnn_resnet50_fpn size
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
                                                                weights_backbone=None)
    ignore = {k for k in theirs.state_dict() if k.endswith("num_batches_tracked")}
    assert set(ours.state_dict()) == set(theirs.state_dict()) - ignore


def test_81_way_heads_differ_from_91_way_by_exactly_the_dropped_rows():
    # cls_score and bbox_pred lose 10 classes: 10 * (1024 + 1) + 40 * (1024 + 1) parameters.
    assert n_params(build_detector("resnet50", num_classes=91)) - n_params(
        build_detector("resnet50")) == 50 * 1025


@pytest.mark.parametrize("backbone,channels", [("resnet18", [64, 128, 256, 512]),
                                               ("resnet101", [256, 512, 1024, 2048]),
                                               ("mobilenet_v2", [24, 32, 96, 1280])])
def test_backbones_feed_a_five_level_256_channel_fpn(backbone, channels):
    model = build_detector(backbone, **SMALL).eval()
    inner = [block[0].in_channels for block in model.backbone.fpn.inner_blocks]
    assert inner == channels
    with torch.no_grad():
        levels = model.backbone(torch.rand(1, 3, 64, 96))
    assert list(levels) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(16, 24), (8, 12), (4, 6), (2, 3),
                                                              (1, 2)]
    assert all(v.shape[1] == 256 for v in levels.values())


def test_coco91_to_81_keeps_the_rows_of_the_coco_categories():
    torch.manual_seed(0)
    big = build_detector("resnet18", num_classes=91, **SMALL)
    small = build_detector("resnet18", **SMALL)
    small.load_state_dict(coco91_to_81(big.state_dict()))
    features = torch.randn(7, 1024)
    big_cls, big_box = big.roi_heads.box_predictor(features)
    cls, box = small.roi_heads.box_predictor(features)
    rows = [0, *COCO_CATEGORY_IDS]
    assert len(rows) == 81 and rows[-1] == 90
    # The weights are the same rows, bit for bit; the outputs agree to float rounding (a matmul
    # with 81 output columns may be blocked differently from one with 91).
    predictor, big_predictor = small.roi_heads.box_predictor, big.roi_heads.box_predictor
    assert torch.equal(predictor.cls_score.weight, big_predictor.cls_score.weight[rows])
    assert torch.equal(predictor.bbox_pred.weight.view(81, 4, -1),
                       big_predictor.bbox_pred.weight.view(91, 4, -1)[rows])
    torch.testing.assert_close(cls, big_cls[:, rows], rtol=0, atol=1e-6)
    torch.testing.assert_close(box.view(7, 81, 4), big_box.view(7, 91, 4)[:, rows], rtol=0,
                               atol=1e-6)


def test_aligned_pooler_equals_roi_align_aligned_on_each_level():
    torch.manual_seed(0)
    feats = {"0": torch.randn(1, 4, 32, 32), "1": torch.randn(1, 4, 16, 16),
             "2": torch.randn(1, 4, 8, 8), "3": torch.randn(1, 4, 4, 4)}
    # Both boxes are 40 x 40, so the FPN heuristic sends them to one level; compare with
    # torchvision's roi_align(aligned=True) on that level.
    boxes = [torch.tensor([[10.0, 12.0, 50.0, 52.0], [30.0, 5.0, 70.0, 45.0]])]
    aligned = AlignedMultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0)
    legacy = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0)
    out = aligned(feats, boxes, [(128, 128)])
    level = int(aligned.map_levels(boxes)[0])
    scale = aligned.scales[level]
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], dim=1)
    expected = roi_align(feats[str(level)], rois, 7, spatial_scale=scale, sampling_ratio=0,
                         aligned=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out, legacy(feats, boxes, [(128, 128)]))


def test_backbone_weights_load_from_a_classifier_state_dict_and_refuse_a_wrong_one(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.resnet18()
    model = build_detector("resnet18", **SMALL)
    path = tmp_path / "r18.pth"
    atomic_torch_save({"model": classifier.state_dict()}, path)
    dropped = load_backbone_weights(model, path)
    assert dropped == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight,
                               classifier.layer3[1].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.body.bn1.running_var, classifier.bn1.running_var)
    with pytest.raises(ValueError, match="do not fit resnet18"):
        load_backbone_weights(model, torchvision.models.resnet34().state_dict())


def test_mobilenet_v2_backbone_takes_the_classifiers_features():
    classifier = torchvision.models.mobilenet_v2()
    model = build_detector("mobilenet_v2", **SMALL)
    dropped = load_backbone_weights(model, classifier.state_dict())
    assert dropped == ["classifier.1.bias", "classifier.1.weight"]
    torch.testing.assert_close(model.backbone.body["13"].conv[0][0].weight,
                               classifier.features[13].conv[0][0].weight, rtol=0, atol=0)
    # trainable_layers=3 freezes the stem and the stride-4 level only.
    assert not any(p.requires_grad for p in model.backbone.body["3"].parameters())
    assert all(p.requires_grad for p in model.backbone.body["4"].parameters())


def test_checkpoint_rebuilds_the_same_detector(tmp_path):
    torch.manual_seed(0)
    model = build_detector("resnet18", kind="mask_rcnn", num_classes=4, stride_in_1x1=False,
                           **SMALL).eval()
    path = tmp_path / "det.pth"
    atomic_torch_save({"model": model.state_dict(), "spec": model.spec.to_dict()}, path)
    again = load_detector(path).eval()
    assert again.spec == model.spec
    image = [torch.rand(3, 60, 80)]
    with torch.no_grad():
        a, b = model(image)[0], again(image)[0]
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_training_sizes_and_test_size_are_kept_apart():
    model = build_detector("resnet18", train_min_sizes=(64, 80), test_min_size=112,
                           max_size=400)
    image = torch.rand(3, 100, 200)
    model.transform.eval()
    assert model.transform([image])[0].image_sizes == [(112, 224)]
    model.transform.train()
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        seen.add(model.transform([image])[0].image_sizes[0][0])
    assert seen == {64, 80}


def test_spec_errors_name_the_bad_value_and_the_choices():
    with pytest.raises(ValueError, match="'resnet9'.*resnet18, resnet34"):
        DetectorSpec("resnet9")
    with pytest.raises(ValueError, match="'retinanet'.*faster_rcnn, mask_rcnn"):
        DetectorSpec("resnet50", kind="retinanet")
    with pytest.raises(ValueError, match="stride_in_1x1"):
        DetectorSpec("resnet18", stride_in_1x1=True)
    with pytest.raises(ValueError, match="unknown DetectorSpec fields \\['depth'\\]"):
        DetectorSpec.from_dict({"backbone": "resnet50", "depth": 50})
