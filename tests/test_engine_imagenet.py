"""The engine on full-resolution image folders (ImageNet layout) and its teacher sources."""

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from ckd_lib.config import ConfigError, RunConfig
from ckd_lib.engine import teachers, train


def make_imagefolder(root, classes=3, per_class=4, size=(40, 32)):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / "imagenet" / split / f"n0000{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                base = np.zeros((size[1], size[0], 3), dtype=np.uint8)
                base[..., c % 3] = 200
                noise = rng.integers(0, 40, base.shape, dtype=np.uint8)
                Image.fromarray(base + noise).save(folder / f"img_{i}.JPEG", quality=90)
    return root


def test_a_few_steps_on_a_generated_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    cfg = RunConfig(student="ResNet18", method="CKD", dataset="imagenet", data_root=str(root),
                    teacher="ResNet18", teacher_checkpoint="untrained", epochs=1, lr=0.01,
                    schedule="cosine", batch_size=4, weight_decay=1e-4, device="cpu",
                    num_workers=0, eval_batch_size=6, out_dir=str(tmp_path / "runs"),
                    progress=False)
    (record,) = train(cfg)
    assert record["status"] == "complete"
    assert record["speed"]["loader"] == "torch"
    assert record["data"]["num_classes"] == 3 and record["data"]["test_size"] == 6
    assert record["history"][0]["train_images"] == 12
    assert np.isfinite(record["history"][0]["loss_ckd"])


def test_imagenet_needs_the_imagenet_zoo_and_a_folder_loader(tmp_path):
    with pytest.raises(ConfigError, match="student='resnet8' is not accepted"):
        RunConfig(student="resnet8", method="CE", dataset="imagenet").validate()
    with pytest.raises(ConfigError, match="loader='gpu' holds 32x32 datasets only"):
        RunConfig(student="ResNet18", method="CE", dataset="imagenet", loader="gpu").validate()
    with pytest.raises(ConfigError, match="applies to imagenet/places365"):
        RunConfig(student="resnet8", teacher="resnet20", teacher_checkpoint="torchvision",
                  schedule="cosine").validate()


def test_imagenet_recipe_uses_torchvision_teachers():
    cfg = RunConfig.from_recipe("imagenet", "ResNet34", "ResNet18", "CKD")
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.weight_decay) == (512, 0.2, 200, 1e-4)
    assert cfg.teacher_checkpoint == "torchvision" and cfg.schedule == "cosine"
    places = RunConfig.from_recipe("places365", None, "ResNet50", "teacher")
    assert places.method == "CE" and places.epochs == 100 and places.milestones == [30, 60, 90]


def test_offline_torchvision_teacher_says_which_file_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError) as info:
        teachers.load_torchvision_teacher("ResNet34", 1000)
    message = str(info.value)
    assert "resnet34-" in message and str(tmp_path / "torch_home") in message
    assert "TORCH_HOME" in message and "teacher_checkpoint" in message


def test_torchvision_teacher_loads_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    path, _, top1 = teachers.torchvision_weights_file("ResNet18")
    assert top1 == pytest.approx(69.758)
    import torchvision

    reference = torchvision.models.resnet18()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model, info = teachers.load_torchvision_teacher("ResNet18", 1000)
    assert info["path"] == str(path) and len(info["sha256"]) == 64
    x = torch.randn(1, 3, 64, 64)
    reference.eval()
    model.eval()
    torch.testing.assert_close(model(x), reference(x))
