"""Detectron2 -> torchvision conversion (ckd_lib.detection.convert).

The truth here is independent of the converter: a torchvision detector with random weights is
written out in Detectron2's layout by an inverse mapping spelled out in this file (names, the
background row moved last, background box/mask rows removed, stem channels in BGR order), and
the conversion must give back exactly the original. The input convention and the MSRA stride
placement are checked against hand-written functional forwards of Detectron2's stem and
bottleneck, so a wrong channel flip, mean or stride would show as different numbers.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ckd_lib.detection.convert import (
    DetectronConversionError,
    UnsafePickleError,
    convert_detectron2_file,
    convert_detectron2_state,
    main,
    read_detectron2_checkpoint,
)
from ckd_lib.detection.models import DetectorSpec, build_detector, load_detector

REPO = Path(__file__).resolve().parent.parent
SMALL = {"train_min_sizes": (64,), "test_min_size": 64, "max_size": 96}
# Detectron2's MSRA defaults (BGR, 0..255) and, for the file that stores its own statistics,
# other values (exact in float32) so that using the stored ones, in RGB order, is visible.
DEFAULT_MEAN_BGR = (103.530, 116.280, 123.675)
STORED_MEAN_BGR = (100.5, 110.25, 120.75)
STORED_STD_BGR = (1.0, 2.0, 4.0)
NUM_CLASSES = 81


def expected_spec(kind: str, mean_bgr=DEFAULT_MEAN_BGR, std_bgr=(1.0, 1.0, 1.0),
                  stride_in_1x1: bool = True) -> DetectorSpec:
    return DetectorSpec(
        "resnet50", kind=kind, num_classes=NUM_CLASSES, stride_in_1x1=stride_in_1x1,
        roi_align_aligned=True, roi_sampling_ratio=0,
        image_mean=tuple(v / 255 for v in reversed(mean_bgr)),
        image_std=tuple(v / 255 for v in reversed(std_bgr)), **SMALL)


def randomise(model: nn.Module, seed: int) -> None:
    """Non-trivial FrozenBN statistics and biases; zero background box/mask rows.

    torchvision never uses the background rows of the box deltas and mask logits, and Detectron2
    has none, so the conversion fills them with zeros; the original has zeros there too.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                n = module.weight.numel()
                # weights below 1 keep the 16 residual blocks' activations of order one
                module.weight.copy_(0.2 + 0.3 * torch.rand(n, generator=g))
                module.bias.copy_(0.1 * torch.randn(n, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(20.0)  # spread the class scores
        predictor.bbox_pred.weight[:4] = 0
        predictor.bbox_pred.bias[:4] = 0
        if model.spec.kind == "mask_rcnn":
            logits = model.roi_heads.mask_predictor.mask_fcn_logits
            logits.weight[0] = 0
            logits.bias[0] = 0


def detectron2_entry(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """torchvision name and array -> Detectron2's (the inverse of the converter, written anew)."""
    parts = name.split(".")
    param = parts[-1]
    if name == "backbone.body.conv1.weight":
        return "backbone.bottom_up.stem.conv1.weight", value[:, [2, 1, 0]]  # RGB -> BGR input
    if name.startswith("backbone.body.bn1."):
        return f"backbone.bottom_up.stem.conv1.norm.{param}", value
    if name.startswith("backbone.body.layer"):
        stage = int(parts[2].removeprefix("layer")) + 1
        block, module = parts[3], parts[4]
        if module == "downsample":
            d2 = "shortcut" if parts[5] == "0" else "shortcut.norm"
        elif module.startswith("conv"):
            d2 = module
        else:  # bn{k} is the norm of conv{k}
            d2 = f"conv{module[-1]}.norm"
        return f"backbone.bottom_up.res{stage}.{block}.{d2}.{param}", value
    if name.startswith("backbone.fpn."):
        role = {"inner_blocks": "lateral", "layer_blocks": "output"}[parts[2]]
        return f"backbone.fpn_{role}{int(parts[3]) + 2}.{param}", value
    module = name.rsplit(".", 1)[0]
    rpn = {"rpn.head.conv.0.0": "conv", "rpn.head.cls_logits": "objectness_logits",
           "rpn.head.bbox_pred": "anchor_deltas"}
    if module in rpn:
        return f"proposal_generator.rpn_head.{rpn[module]}.{param}", value
    if module in ("roi_heads.box_head.fc6", "roi_heads.box_head.fc7"):
        return f"roi_heads.box_head.fc{int(module[-1]) - 5}.{param}", value
    if module == "roi_heads.box_predictor.cls_score":
        rows = list(range(1, value.shape[0])) + [0]  # background last
        return name, value[rows]
    if module == "roi_heads.box_predictor.bbox_pred":
        return name, value[4:]  # no background deltas
    if module.startswith("roi_heads.mask_head."):
        return f"roi_heads.mask_head.mask_fcn{int(parts[2]) + 1}.{param}", value
    if module == "roi_heads.mask_predictor.conv5_mask":
        return f"roi_heads.mask_head.deconv.{param}", value
    if module == "roi_heads.mask_predictor.mask_fcn_logits":
        return f"roi_heads.mask_head.predictor.{param}", value[1:]  # no background mask
    raise KeyError(f"test inverse has no rule for {name}")


def detectron2_cell_anchors() -> dict[str, np.ndarray]:
    """Detectron2's fractional anchors: size 32 * 2**level, aspect ratio h/w in (0.5, 1, 2)."""
    out = {}
    for level in range(5):
        size = 32.0 * 2**level
        rows = []
        for ratio in (0.5, 1.0, 2.0):
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
        out[f"proposal_generator.anchor_generator.cell_anchors.{level}"] = np.array(
            rows, dtype=np.float32)
    return out


def to_detectron2(model: nn.Module) -> dict[str, np.ndarray]:
    out = {}
    for name, tensor in model.state_dict().items():
        key, value = detectron2_entry(name, tensor.numpy())
        assert key not in out
        out[key] = np.ascontiguousarray(value).copy()
    return out


@pytest.fixture(scope="module")
def originals() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models = {}
    for seed, kind in enumerate(("faster_rcnn", "mask_rcnn")):
        model = build_detector(expected_spec(kind, STORED_MEAN_BGR, STORED_STD_BGR)).eval()
        randomise(model, seed)
        models[kind] = model
    return models


@pytest.fixture(scope="module")
def d2_states(originals) -> dict[str, dict[str, np.ndarray]]:
    return {kind: to_detectron2(model) for kind, model in originals.items()}


@pytest.fixture(scope="module")
def d2_files(d2_states, tmp_path_factory) -> dict[str, Path]:
    """Model-zoo style pickles with stored statistics and anchors.

    Faster R-CNN as protocol 2 (arrays' bytes as latin-1 text, as the model zoo's older files),
    Mask R-CNN as protocol 4 (Python 3's own); protocol 2 takes seconds for 170 MB, so only once.
    """
    folder = tmp_path_factory.mktemp("d2")
    files = {}
    for kind, state in d2_states.items():
        model = dict(state)
        model["pixel_mean"] = np.array(STORED_MEAN_BGR, dtype=np.float32).reshape(3, 1, 1)
        model["pixel_std"] = np.array(STORED_STD_BGR, dtype=np.float32).reshape(3, 1, 1)
        model.update(detectron2_cell_anchors())
        path = folder / f"{kind}_model_final.pkl"
        with open(path, "wb") as handle:
            pickle.dump({"model": model, "__author__": "test"}, handle,
                        protocol=2 if kind == "faster_rcnn" else 4)
        files[kind] = path
    return files


def frozen_bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    def get(field):
        return torch.from_numpy(state[f"{prefix}.norm.{field}"]).view(1, -1, 1, 1)

    scale = get("weight") / torch.sqrt(get("running_var") + 1e-5)
    return x * scale + (get("bias") - get("running_mean") * scale)


def conv_bn(x, state, prefix, stride=1, padding=0):
    weight = torch.from_numpy(state[f"{prefix}.weight"])
    return frozen_bn(F.conv2d(x, weight, stride=stride, padding=padding), state, prefix)


def converted_model(state, **kwargs) -> tuple[nn.Module, DetectorSpec, dict]:
    """The converted detector, for the backbone checks (built on meta: no random init to wait)."""
    tensors, spec = convert_detectron2_state(state, spec_overrides=SMALL, **kwargs)
    with torch.device("meta"):
        model = build_detector(spec).eval()
    model.load_state_dict(tensors, strict=True, assign=True)
    return model, spec, tensors


@pytest.mark.parametrize("kind", ["faster_rcnn", "mask_rcnn"])
def test_round_trip_gives_back_the_original(kind, originals, d2_files, tmp_path):
    original, src = originals[kind], d2_files[kind]
    dst = convert_detectron2_file(src, tmp_path / "converted.pth", spec_overrides=SMALL)

    saved = torch.load(dst, map_location="cpu", weights_only=True)
    assert saved["spec"] == original.spec.to_dict()
    assert saved["source"] == {"file": src.name, "format": "detectron2",
                               "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    reference = original.state_dict()
    assert list(saved["model"]) == list(reference)
    for name, tensor in reference.items():
        assert saved["model"][name].dtype == torch.float32, name
        assert torch.equal(saved["model"][name], tensor), name

    loaded = load_detector(dst).eval()
    for model in (original, loaded):
        model.roi_heads.score_thresh = 0.0  # random weights: keep low-scoring detections
        model.roi_heads.detections_per_img = 20  # pasting 100 masks takes seconds
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = original([image])[0], loaded([image])[0]
    assert len(want["boxes"]) > 0
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_torch_file_and_in_memory_inputs(originals, d2_states, tmp_path):
    state = d2_states["faster_rcnn"]
    path = tmp_path / "model_final.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "iteration": 1},
               path)
    read = read_detectron2_checkpoint(path)
    assert set(read) == set(state)
    reference = originals["faster_rcnn"].state_dict()
    for source in (read, {"model": state, "__author__": "x"}):
        tensors, spec = convert_detectron2_state(source, pixel_mean=STORED_MEAN_BGR,
                                                 pixel_std=STORED_STD_BGR, spec_overrides=SMALL)
        assert spec == originals["faster_rcnn"].spec
        assert all(torch.equal(tensors[k], v) for k, v in reference.items())


def test_input_convention_matches_detectron2_stem(d2_states):
    state = d2_states["faster_rcnn"]  # no pixel_mean/pixel_std: Detectron2's defaults apply
    model, spec, _ = converted_model(state)
    assert spec.image_mean == pytest.approx((123.675 / 255, 116.280 / 255, 103.530 / 255),
                                            rel=1e-12)
    assert spec.image_std == pytest.approx((1 / 255,) * 3, rel=1e-12)

    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(4))  # RGB in [0, 1]
    # Detectron2's stem: BGR 0..255 minus the BGR mean, conv1 + FrozenBN, relu, 3/2/1 max-pool.
    bgr = image.flip(0) * 255 - torch.tensor(DEFAULT_MEAN_BGR).view(3, 1, 1)
    prefix = "backbone.bottom_up.stem.conv1"
    want = F.max_pool2d(F.relu(conv_bn(bgr[None], state, prefix, stride=2, padding=3)),
                        kernel_size=3, stride=2, padding=1)

    body = model.backbone.body
    with torch.no_grad():
        x = model.transform.normalize(image)[None]
        got = body.maxpool(body.relu(body.bn1(body.conv1(x))))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_rgb_input_format_keeps_channels_and_needs_statistics(d2_states):
    state = d2_states["faster_rcnn"]
    with pytest.raises(ValueError, match="pixel_mean"):
        convert_detectron2_state(state, input_format="RGB")
    with pytest.raises(ValueError, match="BGR, RGB"):
        convert_detectron2_state(state, input_format="bgr")
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    tensors, spec = convert_detectron2_state(state, input_format="RGB", pixel_mean=mean,
                                             pixel_std=std)
    assert spec.image_mean == tuple(v / 255 for v in mean)
    assert spec.image_std == tuple(v / 255 for v in std)
    assert torch.equal(tensors["backbone.body.conv1.weight"],
                       torch.from_numpy(state["backbone.bottom_up.stem.conv1.weight"]))


def test_stride_in_1x1_matches_detectron2_bottleneck(d2_states):
    state = d2_states["faster_rcnn"]
    model, spec, _ = converted_model(state)
    block = model.backbone.body.layer2[0]
    assert spec.stride_in_1x1 is True
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)

    x = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(5))
    prefix = "backbone.bottom_up.res3.0"
    out = F.relu(conv_bn(x, state, f"{prefix}.conv1", stride=2))
    out = F.relu(conv_bn(out, state, f"{prefix}.conv2", padding=1))
    out = conv_bn(out, state, f"{prefix}.conv3")
    want = F.relu(out + conv_bn(x, state, f"{prefix}.shortcut", stride=2))
    with torch.no_grad():
        got = block(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())

    other, other_spec, _ = converted_model(state, stride_in_1x1=False)
    other_block = other.backbone.body.layer2[0]
    assert other_spec.stride_in_1x1 is False
    assert other_block.conv1.stride == (1, 1) and other_block.conv2.stride == (2, 2)
    with torch.no_grad():
        assert not torch.allclose(other_block(x), want, rtol=1e-2)


def test_mask_rcnn_heads(d2_states):
    state = d2_states["mask_rcnn"]
    tensors, spec = convert_detectron2_state(state)
    assert spec.kind == "mask_rcnn" and spec.num_classes == NUM_CLASSES
    for i in range(4):
        for param in ("weight", "bias"):
            assert torch.equal(tensors[f"roi_heads.mask_head.{i}.0.{param}"],
                               torch.from_numpy(state[f"roi_heads.mask_head.mask_fcn{i + 1}."
                                                      f"{param}"]))
    for param in ("weight", "bias"):
        assert torch.equal(tensors[f"roi_heads.mask_predictor.conv5_mask.{param}"],
                           torch.from_numpy(state[f"roi_heads.mask_head.deconv.{param}"]))
        logits = tensors[f"roi_heads.mask_predictor.mask_fcn_logits.{param}"]
        predictor = state[f"roi_heads.mask_head.predictor.{param}"]
        assert logits.shape[0] == predictor.shape[0] + 1 == NUM_CLASSES
        assert not logits[0].any()  # background mask row is zero
        assert torch.equal(logits[1:], torch.from_numpy(predictor))
    # class k of Detectron2 is label k + 1; its background (last row) is label 0
    scores = tensors["roi_heads.box_predictor.cls_score.bias"]
    d2_scores = torch.from_numpy(state["roi_heads.box_predictor.cls_score.bias"])
    assert scores[0] == d2_scores[-1] and torch.equal(scores[1:], d2_scores[:-1])

    _, faster_spec = convert_detectron2_state(
        {k: v for k, v in state.items() if not k.startswith("roi_heads.mask_head.")})
    assert faster_spec.kind == "faster_rcnn"


def test_broken_checkpoint_lists_every_problem(d2_states, tmp_path):
    state = dict(d2_states["faster_rcnn"])
    del state["backbone.fpn_output3.bias"]
    state["roi_heads.box_head.fc3.weight"] = np.zeros((4, 4), dtype=np.float32)
    state["roi_heads.box_head.fc1.weight"] = np.zeros((1024, 100), dtype=np.float32)
    src = tmp_path / "broken.pkl"
    src.write_bytes(pickle.dumps({"model": state, "__author__": "test"}, protocol=4))
    dst = tmp_path / "out.pth"
    with pytest.raises(DetectronConversionError) as info:
        convert_detectron2_file(src, dst)
    message = str(info.value)
    assert "backbone.fpn.layer_blocks.1.0.bias" in message  # fpn_output3.bias, missing
    assert "roi_heads.box_head.fc3.weight" in message  # unknown
    assert re.search(r"roi_heads\.box_head\.fc1\.weight \(1024, 100\) -> "
                     r"roi_heads\.box_head\.fc6\.weight.*\(1024, 12544\)", message)
    assert "1 Detectron2 keys with no place" in message
    assert "1 model keys not filled" in message
    assert "1 shape mismatches" in message
    assert not dst.exists()


def test_wrong_depth_and_anchors_are_refused(d2_states):
    state = d2_states["faster_rcnn"]
    shallow = {k: v for k, v in state.items()
               if not k.startswith("backbone.bottom_up.res4.5.")}
    with pytest.raises(DetectronConversionError, match=r"res4 has 5 blocks.*6 \(resnet50\)"):
        convert_detectron2_state(shallow)
    anchors = detectron2_cell_anchors()
    key = "proposal_generator.anchor_generator.cell_anchors.1"
    anchors[key] = anchors[key] * 2  # another anchor size than torchvision's 64
    with pytest.raises(DetectronConversionError, match=re.escape(key)):
        convert_detectron2_state({**state, **anchors})


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    payload = {"model": {"a": np.zeros(2, np.float32)}, "x": _RunsShell(f"touch {marker}")}
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        read_detectron2_checkpoint(path)
    assert not marker.exists()
    # _codecs.encode is allowed for latin-1 bytes only
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13"
                     b"\x86R.")
    with pytest.raises(UnsafePickleError, match="rot13"):
        read_detectron2_checkpoint(path)


def test_command_line(d2_files, originals, tmp_path, capsys):
    src, dst = d2_files["mask_rcnn"], tmp_path / "cli.pth"
    result = subprocess.run(
        [sys.executable, "-m", "ckd_lib.detection.convert", str(src), str(dst),
         "--no-stride-in-1x1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count = len(originals["mask_rcnn"].state_dict())
    assert f"{count} tensors written to {dst}" in result.stdout
    assert '"stride_in_1x1": false' in result.stdout
    saved = torch.load(dst, map_location="cpu", weights_only=True)
    assert saved["spec"]["stride_in_1x1"] is False
    assert saved["spec"]["backbone"] == "resnet50"
    assert saved["source"]["file"] == src.name

    # errors go to stderr with exit status 2 (in-process: another interpreter costs seconds)
    assert main([str(tmp_path / "nope.pkl"), str(dst)]) == 2
    assert "nope.pkl" in capsys.readouterr().err
