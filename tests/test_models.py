"""Tests of the model zoo (ckd_lib.models): sizes, interface, checkpoint compatibility.

The parameter counts below are independent truth (measured on RepDistiller/mdistiller and
torchvision, recorded in the study brief), not read back from our own code. The pinned state-dict
keys were checked by hand against the RepDistiller/mdistiller sources: they are what makes the
released ``<name>_vanilla/ckpt_epoch_240.pth`` teachers load with ``strict=True``.
"""

from __future__ import annotations

import functools
import hashlib

import pytest
import torch
import torchvision

from ckd_lib.models import (
    CheckpointMismatchError,
    create_model,
    list_models,
    load_teacher,
    save_checkpoint,
)

CIFAR_PARAMS = {
    "resnet8": 83_892,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "MobileNetV2": 812_836,
    "ShuffleV1": 949_258,
    "ShuffleV2": 1_355_528,
    "ResNet18": 11_220_132,
    "ResNet50": 23_705_252,
}
IMAGENET_PARAMS = {
    "ResNet18": 11_689_512,
    "ResNet34": 21_797_672,
    "ResNet50": 25_557_032,
    "ResNet101": 44_549_160,
    "MobileNetV1": 4_231_976,
}
CIFAR_NAMES = {
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
    "ResNet18", "ResNet50",
}  # fmt: skip

# Exact key -> shape pairs (100 classes / 1000 for ImageNet), verified against the reference code.
PINNED_KEYS = {
    ("resnet8x4", "cifar"): {
        "conv1.weight": (32, 3, 3, 3),
        "layer1.0.conv1.weight": (64, 32, 3, 3),
        "layer1.0.downsample.0.weight": (64, 32, 1, 1),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer3.0.downsample.1.running_var": (256,),
        "fc.weight": (100, 256),
    },
    ("resnet56", "cifar"): {
        "bn1.num_batches_tracked": (),
        "layer1.8.conv2.weight": (16, 16, 3, 3),
        "layer2.0.downsample.0.weight": (32, 16, 1, 1),
        "fc.bias": (100,),
    },
    ("wrn_40_2", "cifar"): {
        "conv1.weight": (16, 3, 3, 3),
        "block1.layer.0.bn1.weight": (16,),
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block1.layer.5.conv2.weight": (32, 32, 3, 3),
        "block3.layer.0.convShortcut.weight": (128, 64, 1, 1),
        "bn1.running_mean": (128,),
        "fc.weight": (100, 128),
    },
    ("vgg13", "cifar"): {
        "block0.0.weight": (64, 3, 3, 3),
        "block0.0.bias": (64,),
        "block0.1.running_var": (64,),
        "block0.3.weight": (64, 64, 3, 3),
        "block4.4.weight": (512,),
        "classifier.weight": (100, 512),
    },
    ("MobileNetV2", "cifar"): {
        "conv1.0.weight": (16, 3, 3, 3),
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1),
        "blocks.6.0.conv.7.running_var": (160,),
        "conv2.0.weight": (1280, 160, 1, 1),
        "classifier.0.weight": (100, 1280),
    },
    ("ShuffleV1", "cifar"): {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (54, 24, 1, 1),
        "layer2.0.conv1.weight": (60, 80, 1, 1),
        "layer3.3.bn3.weight": (960,),
        "linear.weight": (100, 960),
    },
    ("ShuffleV2", "cifar"): {
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv5.weight": (58, 58, 1, 1),
        "layer1.3.conv3.weight": (58, 58, 1, 1),
        "layer2.7.bn3.weight": (116,),
        "conv2.weight": (1024, 464, 1, 1),
        "linear.weight": (100, 1024),
    },
    ("ResNet50", "cifar"): {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.shortcut.0.weight": (256, 64, 1, 1),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "linear.weight": (100, 2048),
    },
    ("MobileNetV1", "imagenet"): {
        "model.0.0.weight": (32, 3, 3, 3),
        "model.1.0.weight": (32, 1, 3, 3),
        "model.13.3.weight": (1024, 1024, 1, 1),
        "model.13.4.running_mean": (1024,),
        "fc.weight": (1000, 1024),
    },
}
ABSENT_KEYS = {
    ("resnet56", "cifar"): ["layer1.0.downsample.0.weight", "relu.weight"],
    ("wrn_40_2", "cifar"): ["block1.layer.1.convShortcut.weight"],
    ("ResNet50", "cifar"): ["layer1.1.shortcut.0.weight", "fc.weight"],
}


@functools.cache
def _model(name: str, dataset: str = "cifar") -> torch.nn.Module:
    """One shared, eval-mode instance per model (tests must not modify it)."""
    num_classes = 1000 if dataset == "imagenet" else 100
    return create_model(name, num_classes=num_classes, dataset=dataset).eval()


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- sizes and names


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_parameter_counts(name):
    assert _n_params(_model(name)) == CIFAR_PARAMS[name]


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMS))
def test_imagenet_parameter_counts(name):
    assert _n_params(_model(name, "imagenet")) == IMAGENET_PARAMS[name]


def test_list_models():
    assert set(list_models("cifar")) == CIFAR_NAMES
    assert set(list_models("imagenet")) == set(IMAGENET_PARAMS)
    assert set(list_models()) == CIFAR_NAMES | set(IMAGENET_PARAMS)
    assert list_models("cifar100") == list_models("cifar")  # alias of the CIFAR zoo


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="resnet8x4") as exc:
        create_model("resnet9000")
    assert "wrn_40_2" in str(exc.value)


def test_name_of_other_zoo_gives_hint():
    with pytest.raises(ValueError, match="imagenet"):
        create_model("ResNet34")  # only in the ImageNet zoo


def test_unknown_dataset():
    with pytest.raises(ValueError, match="imagenet"):
        create_model("resnet8", dataset="mnist-3d")


def test_num_classes_is_honoured():
    m = create_model("resnet8", num_classes=10).eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", sorted(CIFAR_NAMES))
def test_cifar_forward_and_features(name):
    model = _model(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        logits2, feats = model.forward_features(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 100)
    assert torch.equal(logits, logits2)
    assert set(feats) == {"feats", "preact_feats", "pooled_feat"}
    channels = model.stage_channels()
    assert model.get_stage_channels() == channels
    assert [f.shape[1] for f in feats["feats"]] == channels
    assert len(feats["preact_feats"]) == len(feats["feats"])
    for f, p in zip(feats["feats"], feats["preact_feats"], strict=True):
        assert f.shape == p.shape and f.shape[0] == 2
    assert feats["feats"][0].shape[-1] >= feats["feats"][-1].shape[-1]  # coarser with depth
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert feats["pooled_feat"].shape == (2, classifier.in_features)


@pytest.mark.parametrize(
    "name,channels",
    [("ResNet18", [64, 64, 128, 256, 512]), ("MobileNetV1", [128, 256, 512, 1024])],
)
def test_imagenet_features(name, channels):
    model = _model(name, "imagenet")
    x = torch.randn(1, 3, 64, 64)  # small input: the pooling is global
    with torch.no_grad():
        logits, feats = model.forward_features(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (1, 1000)
    assert model.stage_channels() == channels
    assert [f.shape[1] for f in feats["feats"]] == channels
    assert [p.shape for p in feats["preact_feats"]] == [f.shape for f in feats["feats"]]
    assert feats["pooled_feat"].shape == (1, channels[-1])


@pytest.mark.parametrize("name", ["wrn_16_1", "resnet8", "vgg8", "ShuffleV1", "ShuffleV2"])
def test_each_batchnorm_updates_once_per_step(name):
    """Feature extraction must not re-run BN layers (mdistiller's WRN does, in training mode)."""
    model = create_model(name).train()
    model.forward_features(torch.randn(2, 3, 32, 32))
    counts = {k: int(v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {1}


def test_compiles_without_graph_breaks():
    """fullgraph=True fails on any graph break (data-dependent Python control flow, .item())."""
    model = create_model("wrn_16_1", num_classes=10).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    compiled(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.fc.weight.grad is not None


# ----------------------------------------------------------------------------- checkpoint keys


@pytest.mark.parametrize("name,dataset", sorted(PINNED_KEYS))
def test_pinned_state_dict_keys(name, dataset):
    sd = _model(name, dataset).state_dict()
    for key, shape in PINNED_KEYS[(name, dataset)].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for key in ABSENT_KEYS.get((name, dataset), []):
        assert key not in sd, key


def test_torchvision_resnet18_state_dict_loads_strictly():
    tv = torchvision.models.resnet18(weights=None).eval()
    ours = create_model("ResNet18", num_classes=1000, dataset="imagenet").eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), tv(x))


def test_torchvision_resnet50_keys_identical():
    tv = torchvision.models.resnet50(weights=None)
    ours = _model("ResNet50", "imagenet")
    tv_sd, our_sd = tv.state_dict(), ours.state_dict()
    assert list(our_sd) == list(tv_sd)
    assert all(our_sd[k].shape == v.shape for k, v in tv_sd.items())


def test_unknown_torchvision_weights_name():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        create_model("ResNet18", num_classes=1000, dataset="imagenet", weights="NOPE")


# ----------------------------------------------------------------------------- load_teacher


@pytest.fixture
def resnet8():
    torch.manual_seed(0)
    model = create_model("resnet8")
    with torch.no_grad():  # non-trivial BN buffers, so a faulty load would show in the outputs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _check_loaded(teacher, reference):
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), reference(x))


def test_round_trip_repdistiller_format(tmp_path, resnet8):
    path = save_checkpoint(resnet8, tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth", 71.25, 240)
    teacher, info = load_teacher("resnet8", path)
    _check_loaded(teacher, resnet8)
    assert info["stored_accuracy"] == pytest.approx(71.25)
    assert info["epoch"] == 240
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["path"] == str(path)


def test_tensor_accuracy_and_best_acc_keys(tmp_path, resnet8):
    # RepDistiller's meters hold tensors; its *_best.pth and mdistiller use "best_acc".
    sd = resnet8.state_dict()
    p1 = tmp_path / "a.pth"
    torch.save({"epoch": 240, "model": sd, "accuracy": torch.tensor(70.5), "optimizer": {}}, p1)
    p2 = tmp_path / "b.pth"
    torch.save({"epoch": 12, "model": sd, "best_acc": torch.tensor([69.0])[0]}, p2)
    assert load_teacher("resnet8", p1)[1]["stored_accuracy"] == pytest.approx(70.5)
    assert load_teacher("resnet8", p2)[1]["stored_accuracy"] == pytest.approx(69.0)


def test_plain_state_dict(tmp_path, resnet8):
    path = tmp_path / "plain.pth"
    torch.save(resnet8.state_dict(), path)
    teacher, info = load_teacher("resnet8", path)
    _check_loaded(teacher, resnet8)
    assert info["stored_accuracy"] is None and info["epoch"] is None


def test_dataparallel_prefix_is_stripped(tmp_path, resnet8):
    path = tmp_path / "dp.pth"
    sd = {f"module.{k}": v for k, v in resnet8.state_dict().items()}
    torch.save({"model": sd, "accuracy": 70.0, "epoch": 240}, path)
    teacher, _ = load_teacher("resnet8", path)
    _check_loaded(teacher, resnet8)


def test_missing_bn_counters_are_tolerated(tmp_path, resnet8):
    path = tmp_path / "old.pth"
    sd = {k: v for k, v in resnet8.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"model": sd}, path)
    _check_loaded(load_teacher("resnet8", path)[0], resnet8)


def _save_state(tmp_path, sd) -> str:
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "accuracy": 1.0, "epoch": 1}, path)
    return str(path)


def test_error_names_missing_key(tmp_path, resnet8):
    sd = resnet8.state_dict()
    del sd["fc.bias"]
    with pytest.raises(CheckpointMismatchError, match="missing keys") as exc:
        load_teacher("resnet8", _save_state(tmp_path, sd))
    assert isinstance(exc.value, ValueError)
    assert "fc.bias" in str(exc.value) and exc.value.missing == ["fc.bias"]
    assert "Traceback" not in str(exc.value)


def test_error_names_unexpected_key(tmp_path, resnet8):
    sd = resnet8.state_dict()
    sd["projector.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="unexpected keys") as exc:
        load_teacher("resnet8", _save_state(tmp_path, sd))
    assert "projector.weight" in str(exc.value)
    assert "missing keys" not in str(exc.value)


def test_error_names_shape_mismatch(tmp_path):
    ten_class = create_model("resnet8", num_classes=10)
    with pytest.raises(ValueError, match="shape mismatches") as exc:
        load_teacher("resnet8", _save_state(tmp_path, ten_class.state_dict()), num_classes=100)
    msg = str(exc.value)
    assert "fc.weight: (100, 64) -> (10, 64)" in msg
    assert "fc.bias: (100,) -> (10,)" in msg


def test_error_for_wrong_architecture_is_summarised(tmp_path, resnet8):
    with pytest.raises(CheckpointMismatchError) as exc:
        load_teacher("resnet110", _save_state(tmp_path, resnet8.state_dict()))
    assert "layer1.1.conv1.weight" in str(exc.value)
    assert "... and" in str(exc.value)  # long lists are truncated, not dumped


def test_error_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "ckpt_epoch_240.pth"
    with pytest.raises(FileNotFoundError, match="ckpt_epoch_240.pth"):
        load_teacher("resnet8", path)


def test_error_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"epoch": 3, "notes": "no weights"}, path)
    with pytest.raises(ValueError, match="no state dict found"):
        load_teacher("resnet8", path)


def test_error_unknown_model_name(tmp_path, resnet8):
    with pytest.raises(ValueError, match="unknown model"):
        load_teacher("resnet9", _save_state(tmp_path, resnet8.state_dict()))
