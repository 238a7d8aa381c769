"""Convert a Detectron2 Faster/Mask R-CNN (R50/R101-FPN) checkpoint into this project's detector.

Why this exists: the paper's COCO teachers are Detectron2 model-zoo models (e.g.
``COCO-Detection/faster_rcnn_R_101_FPN_3x``, ``model_final_f6e8b1.pkl``), but Detectron2 has no
installable wheels. The teacher is therefore rebuilt as torchvision's ``FasterRCNN`` /
``MaskRCNN`` (``ckd_lib.detection.models``) and its weights are renamed and rearranged here,
without Detectron2 installed. The output is ``{"model", "spec", "source"}``, which
``ckd_lib.detection.models.load_detector`` reads.

Reading. A model-zoo ``.pkl`` is a pickle of ``{"model": {name: numpy array}, "__author__": ...}``.
Unpickling can call any importable function, so it is read by an unpickler that resolves only the
few names a dict of numpy arrays needs (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``,
``OrderedDict``, ``bytes`` and a latin-1-only ``_codecs.encode`` for protocol-2 bytes) and
refuses everything else before it is called (``UnsafePickleError``). A ``.pth`` from
Detectron2's own training (a torch zip file) is read with ``torch.load(weights_only=True)``.

What Detectron2 computes differently, and how each difference is handled:

- Parameter names: an explicit rule per part (``_map_stem`` ... ``_map_mask_head``). Every
  checkpoint key must be mapped (or be one of the dropped keys below), every model key must be
  filled, and shapes must agree; otherwise ``DetectronConversionError`` lists every problem.
- Class rows: Detectron2's ``cls_score`` has K+1 rows with the background LAST; torchvision
  wants it FIRST, so rows become ``[K, 0, ..., K-1]`` (label k = Detectron2 class k-1 = the k-th
  COCO category in ascending id order, as in ``models.py``). ``bbox_pred`` has 4K class-specific
  rows and no background; torchvision has 4(K+1), so four zero rows are prepended. Mask R-CNN's
  mask predictor has K rows; one zero row (and zero bias) is prepended. These background rows
  never reach an output: torchvision decodes a background box and then discards it, and takes the
  mask of the predicted (never background) label.
- Input convention: the MSRA models take BGR pixels in 0..255 minus ``pixel_mean`` (std 1);
  torchvision's transform takes RGB in [0, 1] and computes ``(x - mean) / std``. The stem conv's
  input channels are reversed and the spec gets ``image_mean = pixel_mean_rgb / 255`` and
  ``image_std = pixel_std_rgb / 255``, so ``(x - mean) / std = (255 x - pixel_mean_rgb) /
  pixel_std_rgb``: Detectron2's input, up to float rounding. The statistics come from the
  ``pixel_mean`` / ``pixel_std`` arguments when given, else from the checkpoint's buffers of
  those names, else (BGR only) from Detectron2's defaults (103.530, 116.280, 123.675) / (1, 1, 1).
  ``input_format="RGB"`` (Detectron2's INPUT.FORMAT RGB models) skips the flip and needs the
  statistics from the checkpoint or the arguments: Detectron2's defaults are BGR values.
- Bottleneck stride: MSRA R50/R101 put the stride-2 of a stage's first block on the 1x1 conv
  (RESNETS.STRIDE_IN_1X1, True by default) -> ``spec.stride_in_1x1`` (overridable).
- RoIAlign: the FPN configs pool with ROIAlignV2 (``aligned=True``) and POOLER_SAMPLING_RATIO 0
  (adaptive) -> ``spec.roi_align_aligned=True``, ``spec.roi_sampling_ratio=0``.
- Dropped keys: ``pixel_mean`` / ``pixel_std`` (they become the spec statistics above),
  ``*.num_batches_tracked``, and ``proposal_generator.anchor_generator.cell_anchors.<level>``
  (older checkpoints store the anchors as buffers). Those anchors are first compared with
  torchvision's: they must agree to 0.5 px, i.e. the same sizes and aspect ratios up to
  torchvision's rounding, or the conversion fails.

The same in both, so nothing to do: FrozenBN with eps 1e-5; one anchor size per level (32..512
on P2..P6) with aspect ratios 0.5, 1, 2 in the same channel order of the RPN head; box-coder
weights (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the box head, deltas clamped at
log(1000/16); FPN top-down by nearest x2 upsampling and sum, P6 a stride-2 max-pool of P5; RoI
level assignment with canonical size 224 at level 4; test settings (RPN NMS 0.7, 1000 proposals
per level before NMS and 1000 per image after; score threshold 0.05, NMS 0.5, 100 detections);
padding to a multiple of 32.

What remains different (not handled here; small, but results are not bit-identical):

- Anchor rounding: torchvision rounds its cell anchors to integers, Detectron2 keeps them
  fractional (size 32, ratio 0.5: +-23 x +-11 against +-22.63 x +-11.31). Only the ratio-0.5 and
  ratio-2 anchors differ, by at most 0.5 px per coordinate, so RPN proposals move slightly.
- Resizing: torchvision resizes the normalised float image bilinearly without antialiasing to
  ``floor(scale * size)``; Detectron2 resizes the uint8 image with PIL's bilinear filter
  (antialiased when shrinking) to ``int(scale * size + 0.5)`` and then normalises.
- RoI level assignment adds its epsilon differently (torchvision 1e-6 after the log2,
  Detectron2 1e-8 inside it): boxes within about 1e-6 of a level boundary can pool from another
  level.
- Small boxes: torchvision drops proposals with a side under 1e-3 px and, before NMS,
  detections with a side under 1e-2 px; Detectron2 drops only empty proposals, and empty
  detections after rescaling them to the original image.
- Mask pasting: torchvision pads the 28x28 mask by one pixel and resizes it to the integer box;
  Detectron2 samples it at pixel centres of the float box (grid_sample).
- Training only (matters if a converted teacher is fine-tuned): Detectron2's FPN configs keep
  1000 RPN proposals per image after NMS in training (torchvision 2000), and its box regression
  losses are L1 (SMOOTH_L1_BETA 0) where torchvision uses smooth-L1 with beta 1/9.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

from ckd_lib.detection.models import DetectorSpec, build_detector
from ckd_lib.models.checkpoint import file_sha256
from ckd_lib.results import atomic_torch_save
from ckd_lib.safe_pickle import UnsafePickleError, load_numpy_pickle

__all__ = [
    "DETECTRON2_PIXEL_MEAN",
    "DETECTRON2_PIXEL_STD",
    "DetectronConversionError",
    "UnsafePickleError",
    "convert_detectron2_file",
    "convert_detectron2_state",
    "main",
    "read_detectron2_checkpoint",
]

# Detectron2's cfg.MODEL.PIXEL_MEAN / PIXEL_STD defaults: BGR order, 0..255 scale.
DETECTRON2_PIXEL_MEAN = (103.530, 116.280, 123.675)
DETECTRON2_PIXEL_STD = (1.0, 1.0, 1.0)
INPUT_FORMATS = ("BGR", "RGB")
# Blocks in res4 (conv4_x) tell the depth apart: the other stages have the same shapes.
_RES4_BLOCKS_TO_BACKBONE = {6: "resnet50", 23: "resnet101"}
# DetectorSpec fields a caller may set; the rest follow from the weights and the arguments.
_FREE_SPEC_FIELDS = ("train_min_sizes", "test_min_size", "max_size", "trainable_layers", "extra")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
_MAX_LISTED = 20
# torch.save's legacy (non-zip) format starts with this pickled number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class DetectronConversionError(ValueError):
    """The Detectron2 checkpoint does not fit the torchvision detector it should become."""


# ----------------------------------------------------------------------------------------------
# Reading


def _load_pickle(path: Path):
    return load_numpy_pickle(path, "a Detectron2 checkpoint")


def _is_array(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic, torch.Tensor))


def _describe(value) -> str:
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ if dtype is None else f"{type(value).__name__} of {dtype}"


def _model_entries(checkpoint, source: str) -> dict:
    """The ``{name: array}`` part of a Detectron2 checkpoint (or of a bare state dict)."""
    if not isinstance(checkpoint, Mapping):
        raise DetectronConversionError(
            f"{source}: expected a dict with a 'model' entry (Detectron2's checkpoint layout); "
            f"got {type(checkpoint).__name__}")
    if "model" in checkpoint:
        model = checkpoint["model"]
        if not isinstance(model, Mapping):
            raise DetectronConversionError(f"{source}: 'model' is a {type(model).__name__}, "
                                           "not a mapping of parameter names to arrays")
    elif "blobs" in checkpoint:
        raise DetectronConversionError(
            f"{source}: holds Caffe2/Detectron1 'blobs' (other parameter names); only "
            "Detectron2-named checkpoints ({'model': {...}}) are converted")
    elif checkpoint and all(_is_array(v) for v in checkpoint.values()):
        model = checkpoint
    else:
        keys = sorted(str(k) for k in checkpoint)[:_MAX_LISTED]
        raise DetectronConversionError(f"{source}: no 'model' entry and not a mapping of names "
                                       f"to arrays (top-level keys: {keys})")
    bad = [f"{k!r} ({_describe(v)})" for k, v in model.items()
           if not isinstance(k, str) or not _is_array(v)
           or (isinstance(v, (np.ndarray, np.generic)) and v.dtype.kind not in "biuf")]
    if bad:
        raise DetectronConversionError(
            f"{source}: {len(bad)} model entries are not arrays or tensors with string names "
            f"(first {_MAX_LISTED}: {', '.join(bad[:_MAX_LISTED])}); accepted values: "
            "numeric numpy arrays or scalars, torch tensors")
    return {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in model.items()}


def read_detectron2_checkpoint(
        source: str | Path | Mapping) -> dict[str, np.ndarray | torch.Tensor]:
    """The parameters of a Detectron2 checkpoint: ``{name: numpy array or tensor}``.

    ``source``: a model-zoo ``.pkl`` (read with the numpy-only unpickler), a torch file such as
    Detectron2's ``model_final.pth`` (``torch.load(weights_only=True)``), or an in-memory mapping
    (a checkpoint dict with ``"model"``, or the parameter mapping itself). Names are not
    checked here; ``convert_detectron2_state`` does that.
    """
    if isinstance(source, Mapping):
        return _model_entries(source, "in-memory checkpoint")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Detectron2 checkpoint {str(path)!r} not found (give a model-zoo "
                                ".pkl, a torch .pth, or a mapping)")
    if zipfile.is_zipfile(path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    else:
        checkpoint = _load_pickle(path)
        if isinstance(checkpoint, int) and checkpoint == _TORCH_LEGACY_MAGIC:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return _model_entries(checkpoint, str(path))


# ----------------------------------------------------------------------------------------------
# Key map: one function per part, each returns (torchvision name, row/channel transform) or None.


class _Target(NamedTuple):
    name: str
    transform: Callable[[np.ndarray], np.ndarray]


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _bgr_to_rgb_input(array: np.ndarray) -> np.ndarray:
    """Reverse the stem conv's input channels, so RGB input meets the weights BGR input met."""
    if array.ndim == 4 and array.shape[1] == 3:
        return array[:, ::-1]
    return array  # any other shape is reported by the shape check


def _background_row_first(array: np.ndarray) -> np.ndarray:
    """Detectron2's class rows ``[0..K-1, bg]`` -> torchvision's ``[bg, 0..K-1]``."""
    if array.ndim == 0 or array.shape[0] == 0:
        return array
    return np.concatenate([array[-1:], array[:-1]], axis=0)


def _prepend_zero_rows(count: int) -> Callable[[np.ndarray], np.ndarray]:
    """Add ``count`` zero background rows in front (they never reach an output, see above)."""

    def prepend(array: np.ndarray) -> np.ndarray:
        if array.ndim == 0:
            return array
        zeros = np.zeros((count, *array.shape[1:]), dtype=array.dtype)
        return np.concatenate([zeros, array], axis=0)

    return prepend


def _map_stem(key: str, flip_input: bool) -> _Target | None:
    """``backbone.bottom_up.stem.conv1`` (conv with its FrozenBN) -> ``backbone.body.conv1/bn1``."""
    prefix = "backbone.bottom_up.stem.conv1."
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    if rest == "weight":
        return _Target("backbone.body.conv1.weight", _bgr_to_rgb_input if flip_input else _same)
    if rest.startswith("norm.") and rest[len("norm."):] in _BN_FIELDS:
        return _Target(f"backbone.body.bn1.{rest[len('norm.'):]}", _same)
    return None


_RES_BLOCK = re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(.+)")


def _map_resnet_block(key: str) -> _Target | None:
    """``res{2..5}.{i}.conv{k}[.norm]`` / ``.shortcut[.norm]`` -> ``layer{1..4}.{i}``.

    Detectron2 nests each conv's FrozenBN as ``<conv>.norm``; torchvision has ``bn{k}`` beside
    ``conv{k}``, and the projection shortcut as ``downsample.0`` (conv) / ``downsample.1`` (BN).
    """
    match = _RES_BLOCK.fullmatch(key)
    if match is None:
        return None
    stage, block, conv, rest = match.groups()
    layer = f"backbone.body.layer{int(stage) - 1}.{block}"
    if conv == "shortcut":
        conv_name, norm_name = "downsample.0", "downsample.1"
    else:
        conv_name, norm_name = conv, f"bn{conv[-1]}"
    if rest == "weight":
        return _Target(f"{layer}.{conv_name}.weight", _same)
    if rest.startswith("norm.") and rest[len("norm."):] in _BN_FIELDS:
        return _Target(f"{layer}.{norm_name}.{rest[len('norm.'):]}", _same)
    return None


_FPN_CONV = re.compile(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)")


def _map_fpn(key: str) -> _Target | None:
    """``fpn_lateral{2..5}`` -> ``fpn.inner_blocks.{0..3}.0``; ``fpn_output*``: ``layer_blocks``."""
    match = _FPN_CONV.fullmatch(key)
    if match is None:
        return None
    role, level, param = match.groups()
    blocks = "inner_blocks" if role == "lateral" else "layer_blocks"
    return _Target(f"backbone.fpn.{blocks}.{int(level) - 2}.0.{param}", _same)


_RPN_PARTS = {"conv": "conv.0.0", "objectness_logits": "cls_logits", "anchor_deltas": "bbox_pred"}
_RPN_HEAD = re.compile(r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)"
                       r"\.(weight|bias)")


def _map_rpn(key: str) -> _Target | None:
    """RPN head: shared 3x3 conv, objectness (A channels) and deltas (A x 4 channels).

    Both libraries order the channels anchor-major (A anchors, then the 4 deltas) and the anchors
    of a cell by aspect ratio, so no reordering is needed.
    """
    match = _RPN_HEAD.fullmatch(key)
    if match is None:
        return None
    part, param = match.groups()
    return _Target(f"rpn.head.{_RPN_PARTS[part]}.{param}", _same)


_BOX_HEAD_FC = re.compile(r"roi_heads\.box_head\.fc([12])\.(weight|bias)")


def _map_box_head(key: str) -> _Target | None:
    """``box_head.fc1``/``fc2`` -> ``fc6``/``fc7`` (both flatten RoI features as C, H, W)."""
    match = _BOX_HEAD_FC.fullmatch(key)
    if match is None:
        return None
    index, param = match.groups()
    return _Target(f"roi_heads.box_head.fc{int(index) + 5}.{param}", _same)


_BOX_PREDICTOR = re.compile(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)")


def _map_box_predictor(key: str) -> _Target | None:
    """Class scores move the background row first; class-specific deltas gain background rows."""
    match = _BOX_PREDICTOR.fullmatch(key)
    if match is None:
        return None
    part, param = match.groups()
    name = f"roi_heads.box_predictor.{part}.{param}"
    if part == "cls_score":
        return _Target(name, _background_row_first)
    return _Target(name, _prepend_zero_rows(4))


_MASK_HEAD = re.compile(r"roi_heads\.mask_head\.(mask_fcn[1-4]|deconv|predictor)\.(weight|bias)")


def _map_mask_head(key: str) -> _Target | None:
    """Mask R-CNN: four 3x3 convs, the 2x deconv, and the per-class 1x1 predictor (K rows)."""
    match = _MASK_HEAD.fullmatch(key)
    if match is None:
        return None
    part, param = match.groups()
    if part == "deconv":
        return _Target(f"roi_heads.mask_predictor.conv5_mask.{param}", _same)
    if part == "predictor":
        return _Target(f"roi_heads.mask_predictor.mask_fcn_logits.{param}", _prepend_zero_rows(1))
    return _Target(f"roi_heads.mask_head.{int(part[-1]) - 1}.0.{param}", _same)


def _map_key(key: str, flip_input: bool) -> _Target | None:
    """The torchvision name and transform for one Detectron2 key, or None when no rule applies."""
    return (_map_stem(key, flip_input) or _map_resnet_block(key) or _map_fpn(key)
            or _map_rpn(key) or _map_box_head(key) or _map_box_predictor(key)
            or _map_mask_head(key))


_PIXEL_STAT_KEYS = ("pixel_mean", "pixel_std")
_CELL_ANCHORS = re.compile(r"proposal_generator\.anchor_generator\.cell_anchors\.(\d+)")


# ----------------------------------------------------------------------------------------------
# Spec inference


def _three_values(value, what: str) -> tuple[float, float, float]:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be 3 finite values (one per channel); got "
                         f"{array.tolist()}")
    return tuple(float(v) for v in array)


def _pixel_statistics(arrays: Mapping[str, np.ndarray], input_format: str,
                      pixel_mean, pixel_std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Detectron2's pixel mean/std (0..255, checkpoint channel order) -> the spec's RGB ones."""
    found = {}
    for name, given in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
        if given is not None:
            found[name] = _three_values(given, f"{name} argument")
        elif name in arrays:
            found[name] = _three_values(arrays[name], f"the checkpoint's {name}")
        elif input_format == "BGR":
            default = DETECTRON2_PIXEL_MEAN if name == "pixel_mean" else DETECTRON2_PIXEL_STD
            found[name] = tuple(default)
        else:
            raise ValueError(
                f"input_format='RGB' needs {name}: the checkpoint has none and Detectron2's "
                f"default is a BGR value; pass {name}=(R, G, B) on the 0..255 scale "
                "(the model config's MODEL.PIXEL_MEAN / PIXEL_STD)")
    if any(v <= 0 for v in found["pixel_std"]):
        raise ValueError(f"pixel_std must be positive; got {found['pixel_std']}")
    mean, std = found["pixel_mean"], found["pixel_std"]
    if input_format == "BGR":
        mean, std = mean[::-1], std[::-1]
    return tuple(v / 255.0 for v in mean), tuple(v / 255.0 for v in std)


def _infer_spec(arrays: Mapping[str, np.ndarray], *, input_format: str,
                stride_in_1x1: bool | None, pixel_mean, pixel_std,
                spec_overrides: Mapping | None) -> DetectorSpec:
    """Backbone depth, detector kind and class count from the weights; input and RoI switches."""
    res4_blocks = sorted({int(m.group(1)) for k in arrays
                          if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", k))})
    if not res4_blocks:
        sample = sorted(arrays)[:10]
        raise DetectronConversionError(
            "cannot tell the ResNet depth: no 'backbone.bottom_up.res4.<i>.*' keys (is this a "
            f"Detectron2 ResNet-FPN detector? first keys: {sample})")
    backbone = _RES4_BLOCKS_TO_BACKBONE.get(len(res4_blocks))
    if backbone is None:
        accepted = ", ".join(f"{n} ({name})" for n, name in _RES4_BLOCKS_TO_BACKBONE.items())
        raise DetectronConversionError(f"res4 has {len(res4_blocks)} blocks; accepted: {accepted}")
    rows = None
    for param in ("weight", "bias"):
        key = f"roi_heads.box_predictor.cls_score.{param}"
        if key in arrays and np.ndim(arrays[key]) >= 1:
            rows = int(np.shape(arrays[key])[0])
            break
    if rows is None:
        raise DetectronConversionError(
            "no roi_heads.box_predictor.cls_score.{weight,bias}: cannot count the classes (only "
            "Faster/Mask R-CNN with Detectron2's StandardROIHeads are converted)")
    if rows < 2:
        raise DetectronConversionError(f"cls_score has {rows} rows; need K classes + background "
                                       "(at least 2)")
    kind = "mask_rcnn" if any(k.startswith("roi_heads.mask_head.") for k in arrays) else \
        "faster_rcnn"
    image_mean, image_std = _pixel_statistics(arrays, input_format, pixel_mean, pixel_std)
    overrides = dict(spec_overrides or {})
    fixed = sorted(set(overrides) - set(_FREE_SPEC_FIELDS))
    if fixed:
        raise ValueError(f"spec_overrides may set {', '.join(_FREE_SPEC_FIELDS)}; {fixed} follow "
                         "from the checkpoint and the conversion arguments")
    return DetectorSpec(backbone=backbone, kind=kind, num_classes=rows,
                        image_mean=image_mean, image_std=image_std,
                        stride_in_1x1=True if stride_in_1x1 is None else bool(stride_in_1x1),
                        roi_align_aligned=True, roi_sampling_ratio=0, **overrides)


# ----------------------------------------------------------------------------------------------
# Conversion


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_anchors(arrays: Mapping[str, np.ndarray], model) -> list[str]:
    """Compare stored Detectron2 cell anchors with torchvision's (same sizes/ratios, rounded)."""
    generator = model.rpn.anchor_generator
    # Rebuilt on the CPU: the model itself may have been built on the meta device.
    reference = AnchorGenerator(generator.sizes, generator.aspect_ratios).cell_anchors
    problems = []
    for key, value in arrays.items():
        match = _CELL_ANCHORS.fullmatch(key)
        if match is None:
            continue
        level = int(match.group(1))
        if level >= len(reference):
            problems.append(f"{key}: level {level}, but torchvision's RPN has {len(reference)} "
                            "levels")
            continue
        ours = reference[level].numpy()
        theirs = value.astype(np.float64)
        if theirs.shape != ours.shape or np.max(np.abs(theirs - ours)) > 0.5 + 1e-4:
            problems.append(f"{key}: Detectron2 anchors {np.round(theirs, 2).tolist()} differ "
                            f"from torchvision's {ours.tolist()} (other anchor sizes or aspect "
                            "ratios than the torchvision detector's)")
    return problems


def _listing(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    lines = [f"  {len(items)} {title} (first {_MAX_LISTED} shown):"
             if len(items) > _MAX_LISTED else f"  {len(items)} {title}:"]
    lines += [f"    {item}" for item in items[:_MAX_LISTED]]
    return lines


def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def convert_detectron2_state(
        state: Mapping, *, input_format: str = "BGR", stride_in_1x1: bool | None = None,
        pixel_mean: Sequence[float] | None = None, pixel_std: Sequence[float] | None = None,
        spec_overrides: Mapping | None = None) -> tuple[dict[str, torch.Tensor], DetectorSpec]:
    """Map Detectron2 parameters onto the torchvision detector; return its state dict and spec.

    ``state``: Detectron2 parameter names -> numpy arrays or tensors (or a checkpoint dict with a
    ``model`` entry). ``input_format``: the checkpoint's INPUT.FORMAT, "BGR" (MSRA models: the
    stem's input channels are flipped) or "RGB". ``stride_in_1x1``: RESNETS.STRIDE_IN_1X1
    (None = Detectron2's default, True). ``pixel_mean`` / ``pixel_std``: MODEL.PIXEL_MEAN /
    PIXEL_STD (0..255, the checkpoint's channel order); given, they take precedence over the
    checkpoint's ``pixel_mean`` / ``pixel_std`` buffers, which take precedence over the defaults.
    ``spec_overrides``: other DetectorSpec fields ("train_min_sizes", "test_min_size",
    "max_size", "trainable_layers", "extra").

    Raises ``DetectronConversionError`` listing every unmapped key, unfilled model key and shape
    mismatch before any tensor is made; the tensors are float32 copies.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
    arrays = {k: _as_numpy(v) for k, v in read_detectron2_checkpoint(state).items()}
    spec = _infer_spec(arrays, input_format=input_format, stride_in_1x1=stride_in_1x1,
                       pixel_mean=pixel_mean, pixel_std=pixel_std, spec_overrides=spec_overrides)
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        model = build_detector(spec)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    flip_input = input_format == "BGR"
    filled: dict[str, tuple[str, np.ndarray]] = {}
    no_place: list[str] = []
    for key, value in arrays.items():
        if key in _PIXEL_STAT_KEYS or key.endswith(".num_batches_tracked") \
                or _CELL_ANCHORS.fullmatch(key):
            continue
        target = _map_key(key, flip_input)
        if target is None:
            no_place.append(f"{key} {_shape(value.shape)} (no rule maps this name)")
        elif target.name not in expected:
            no_place.append(f"{key} {_shape(value.shape)} -> {target.name} (the "
                            f"{spec.backbone} {spec.kind} has no such key)")
        elif target.name in filled:
            no_place.append(f"{key} -> {target.name} (already filled from "
                            f"{filled[target.name][0]})")
        else:
            filled[target.name] = (key, target.transform(value))
    missing = [name for name in expected if name not in filled]
    mismatched = [
        f"{source} {_shape(arrays[source].shape)} -> {name}: converted {_shape(array.shape)}, "
        f"model needs {_shape(expected[name])}"
        for name, (source, array) in filled.items() if tuple(array.shape) != expected[name]]
    other = _check_anchors(arrays, model)
    if no_place or missing or mismatched or other:
        lines = [f"Detectron2 checkpoint does not fit the torchvision {spec.backbone} {spec.kind} "
                 f"with {spec.num_classes} classes (background included):"]
        lines += _listing("Detectron2 keys with no place in the model", no_place)
        lines += _listing("model keys not filled by the checkpoint", missing)
        lines += _listing("shape mismatches", mismatched)
        lines += _listing("other problems", other)
        if not any(k.startswith("backbone.bottom_up.") for k in arrays):
            lines.append("  (no key starts with 'backbone.bottom_up.': not a Detectron2 "
                         "ResNet-FPN detector?)")
        raise DetectronConversionError("\n".join(lines))
    tensors = {name: torch.from_numpy(np.array(filled[name][1], dtype=np.float32, order="C"))
               for name in expected}
    return tensors, spec


def _convert_and_save(src: str | Path, dst: str | Path,
                      **kwargs) -> tuple[Path, DetectorSpec, int]:
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"destination {str(dst)!r} is the source file; choose another path")
    tensors, spec = convert_detectron2_state(read_detectron2_checkpoint(src), **kwargs)
    atomic_torch_save({"model": tensors, "spec": spec.to_dict(),
                       "source": {"file": src.name, "sha256": file_sha256(src),
                                  "format": "detectron2"}}, dst)
    return dst, spec, len(tensors)


def convert_detectron2_file(src: str | Path, dst: str | Path, **kwargs) -> Path:
    """Convert ``src`` (Detectron2 .pkl/.pth) and write ``dst`` for ``load_detector``.

    ``kwargs`` go to ``convert_detectron2_state``. The output records the source file's name and
    SHA-256, so a result computed with the teacher names the exact file it came from.
    """
    return _convert_and_save(src, dst, **kwargs)[0]


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ckd_lib.detection.convert",
        description="Convert a Detectron2 Faster/Mask R-CNN R50/R101-FPN checkpoint (.pkl or .pth) "
                    "into a torchvision detector checkpoint for ckd_lib.detection.models.")
    parser.add_argument("src", type=Path, help="Detectron2 checkpoint (model-zoo .pkl or .pth)")
    parser.add_argument("dst", type=Path, help="output .pth")
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="BGR",
                        help="the model's INPUT.FORMAT (default BGR, the MSRA models')")
    parser.add_argument("--no-stride-in-1x1", dest="stride_in_1x1", action="store_false",
                        default=None, help="RESNETS.STRIDE_IN_1X1=False (e.g. torchvision-"
                        "pretrained backbones); default True")
    parser.add_argument("--pixel-mean", type=float, nargs=3, metavar="V",
                        help="MODEL.PIXEL_MEAN (0..255, input-format order); overrides the "
                        "checkpoint's pixel_mean")
    parser.add_argument("--pixel-std", type=float, nargs=3, metavar="V",
                        help="MODEL.PIXEL_STD (0..255, input-format order); overrides the "
                        "checkpoint's pixel_std")
    args = parser.parse_args(argv)
    try:
        dst, spec, count = _convert_and_save(args.src, args.dst, input_format=args.input_format,
                                             stride_in_1x1=args.stride_in_1x1,
                                             pixel_mean=args.pixel_mean,
                                             pixel_std=args.pixel_std)
    except (ValueError, pickle.UnpicklingError, EOFError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(spec.to_dict(), indent=2))
    print(f"{count} tensors written to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
