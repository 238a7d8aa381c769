"""ImageNet/Places365 file datasets and their loaders, on a tiny ImageFolder of generated JPEGs.

CPU only and fast: 3 classes x 4 train images (+ 2 val images each) of 64x48 pixels, and the
transform sizes scaled down (crop 32, resize 40).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ckd_lib.data import (
    IMAGENET_LOADER_KINDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    ImageNetLoader,
    ShardedEpochSampler,
    load_imagefolder_dataset,
    make_imagenet_loader,
)
from ckd_lib.data.seeding import epoch_seed
from ckd_lib.data.torch_loader import ORDER_STREAM

CLASSES = ("n01440764", "n01443537", "n01484850")
SIZES = {"crop_size": 32, "resize_size": 40}
SOLID = (200, 30, 90)  # colour of every val image of the last class


def write_jpeg(path, rng: np.random.Generator, color=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    else:
        pixels = np.empty((48, 64, 3), dtype=np.uint8)
        pixels[:] = color
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(CLASSES):
        for k in range(4):
            write_jpeg(root / "imagenet" / "train" / wnid / f"{wnid}_{k}.JPEG", rng)
        for k in range(2):
            color = SOLID if c == len(CLASSES) - 1 else None
            write_jpeg(root / "imagenet" / "val" / wnid / f"val_{c}_{k}.JPEG", rng, color)
    return root


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# ---------------------------------------------------------------------------- datasets
def test_imagenet_dataset_loads_with_sorted_class_labels(data_root):
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    val = load_imagefolder_dataset("imagenet", "val", data_root, **SIZES)
    assert (len(train), len(val)) == (12, 6)
    assert train.classes == list(CLASSES) and train.num_classes == 3
    assert train.targets == [0] * 4 + [1] * 4 + [2] * 4
    assert train.train and not val.train and val.split == "val"
    assert train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    # "test" is the val split; data_root may point directly at the imagenet folder.
    direct = load_imagefolder_dataset("imagenet", "test", data_root / "imagenet", **SIZES)
    assert direct.samples == val.samples and direct.fingerprint() == val.fingerprint()
    assert train.fingerprint() != val.fingerprint()


def test_test_transform_is_resize_centercrop_and_normalisation(data_root):
    val = load_imagefolder_dataset("imagenet", "val", data_root, **SIZES)
    x, y = val[5]  # a solid-colour image: every output pixel is the normalised colour
    assert y == 2 and x.shape == (3, 32, 32)
    want = (torch.tensor(SOLID) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    err = (x - want.view(3, 1, 1)).abs().max().item()
    assert err < 3 / 255 / min(IMAGENET_STD), err  # JPEG rounding of a flat colour
    assert [type(t).__name__ for t in val.transform.transforms] == [
        "Resize",
        "CenterCrop",
        "ToTensor",
        "Normalize",
    ]
    assert val.transform.transforms[0].size == 40 and val.transform.transforms[1].size == (32, 32)
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    assert [type(t).__name__ for t in train.transform.transforms[:2]] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
    ]


def test_subset_is_stratified(data_root):
    sub = load_imagefolder_dataset("imagenet", "train", data_root, subset=6, seed=3, **SIZES)
    assert len(sub) == 6 and sorted(sub.targets) == [0, 0, 1, 1, 2, 2]
    again = load_imagefolder_dataset("imagenet", "train", data_root, subset=6, seed=3, **SIZES)
    assert sub.samples == again.samples


def test_missing_imagenet_names_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_imagefolder_dataset("imagenet", "train", tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"{tmp_path}/imagenet/train/<wnid>/*.JPEG" in msg
    assert f"{tmp_path}/imagenet/val/<wnid>/*.JPEG" in msg
    assert "image-net.org" in msg and "CKD_DATA_ROOT" in msg


def test_flat_val_folder_and_mismatched_classes_are_explained(tmp_path):
    rng = np.random.default_rng(1)
    write_jpeg(tmp_path / "imagenet" / "train" / "n1" / "a.JPEG", rng)
    write_jpeg(tmp_path / "imagenet" / "train" / "n2" / "b.JPEG", rng)
    write_jpeg(tmp_path / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG", rng)
    with pytest.raises(DatasetNotFoundError, match="no class folders.*val/<wnid>"):
        load_imagefolder_dataset("imagenet", "val", tmp_path)
    write_jpeg(tmp_path / "imagenet" / "val" / "n1" / "c.JPEG", rng)
    with pytest.raises(ValueError, match="class folders differ.*labels would not match"):
        load_imagefolder_dataset("imagenet", "val", tmp_path)


def test_places365_missing_files_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_imagefolder_dataset("places365", "train", tmp_path)
    msg = str(info.value)
    assert "categories_places365.txt" in msg and "places365_train_standard.txt" in msg
    assert "data_256_standard" in msg and "download=True" in msg


def test_places365_goes_through_torchvision_small_split(tmp_path, monkeypatch):
    root = tmp_path / "places365"
    for name in ("categories_places365.txt", "places365_val.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "val_256").mkdir()
    calls = []

    class FakePlaces365:
        def __init__(self, root, split, small, download):
            calls.append((root, split, small, download))
            self.imgs = [(f"{root}/val_256/a.jpg", 1), (f"{root}/val_256/b.jpg", 0)]
            self.classes = ["/a/abbey", "/a/airfield"]
            self.loader = lambda path: path

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "Places365", FakePlaces365)
    ds = load_imagefolder_dataset("places365", "val", tmp_path, **SIZES)
    assert calls == [(str(root), "val", True, False)]
    assert ds.name == "places365" and ds.targets == [1, 0] and ds.num_classes == 2
    assert not ds.train


def test_unknown_names_are_refused(data_root):
    with pytest.raises(ValueError, match="accepted: imagenet, places365"):
        load_imagefolder_dataset("cifar100", "train", data_root)
    with pytest.raises(ValueError, match="accepted: train, val, test"):
        load_imagefolder_dataset("imagenet", "training", data_root)


# ---------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,batch,world", [(23, 3, 2), (24, 4, 3), (5, 4, 2), (10, 2, 1)])
def test_train_shards_are_disjoint_cover_the_epoch_and_form_the_global_batches(n, batch, world):
    seed, epoch = 7, 3
    shards = [ShardedEpochSampler(n, True, seed, batch, r, world) for r in range(world)]
    for s in shards:
        s.epoch = epoch
    idx = [s.indices() for s in shards]
    # equal shares
    assert all(len(i) == len(s) == len(idx[0]) for i, s in zip(idx, shards, strict=True))
    flat = [i for part in idx for i in part]
    assert len(set(flat)) == len(flat) == n - n % world  # disjoint, all but < world samples
    # The permutation is plain shuffling from (seed, epoch); consecutive global batches of
    # world*batch are split into contiguous per-rank blocks.
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, ORDER_STREAM))
    perm = torch.randperm(n, generator=g).tolist()[: n - n % world]
    step = batch * world
    for start in range(0, len(perm), step):
        block = perm[start : start + step]
        k = len(block) // world
        got = [i for r in range(world) for i in idx[r][start // world : start // world + k]]
        assert got == block
    if world == 1:
        assert idx[0] == perm
    # Same (seed, epoch) -> same order; another epoch -> another order.
    again = ShardedEpochSampler(n, True, seed, batch, 0, world)
    again.epoch = epoch
    assert again.indices() == idx[0]
    assert again.indices(epoch + 1) != idx[0]


@pytest.mark.parametrize("n,batch,world", [(23, 3, 2), (7, 4, 3), (6, 2, 2)])
def test_eval_shards_cover_every_sample_once(n, batch, world):
    shards = [ShardedEpochSampler(n, False, 0, batch, r, world) for r in range(world)]
    idx = [s.indices() for s in shards]
    assert sorted(i for part in idx for i in part) == list(range(n))
    assert [len(s) for s in shards] == [len(i) for i in idx]
    assert max(map(len, idx)) - min(map(len, idx)) <= 1
    assert all(key[1] is None for key in shards[0])


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank"):
        ShardedEpochSampler(10, True, 0, 2, rank=2, world_size=2)


# ---------------------------------------------------------------------------- loaders
def test_loader_batches_shapes_and_replay(data_root):
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    loader = ImageNetLoader(train, 5, train=True, seed=1, num_workers=0)
    assert loader.drop_last and len(loader) == 2 and loader.device.type == "cpu"
    first = batches(loader)
    assert loader.epoch == 1
    for x, y in first:
        assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.shape == (5,)
    assert -3 < first[0][0].mean().item() < 3
    second = batches(loader)  # epoch 1: another order
    assert not torch.equal(first[0][1], second[0][1]) or not torch.equal(first[0][0], second[0][0])
    loader.set_epoch(0)  # replay epoch 0 exactly
    for (x0, y0), (x1, y1) in zip(first, batches(loader), strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    # The global RNG is untouched by the per-sample seeding in the main process.
    state = torch.get_rng_state()
    batches(loader)
    assert torch.equal(state, torch.get_rng_state())


def test_eval_loader_keeps_every_image_in_order(data_root):
    val = load_imagefolder_dataset("imagenet", "val", data_root, **SIZES)
    loader = ImageNetLoader(val, 4, train=False, seed=0, num_workers=0)
    assert not loader.drop_last and len(loader) == 2
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == val.targets


def test_two_ranks_together_see_the_single_process_global_batches(data_root):
    """Rank 0's batch then rank 1's batch == the single-process batch of twice the size:
    same images, same augmentation (the per-sample seeds do not depend on the world size)."""
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    single = batches(ImageNetLoader(train, 4, True, seed=5, num_workers=0))
    per_rank = [
        batches(ImageNetLoader(train, 2, True, seed=5, num_workers=0, rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(single) == len(per_rank[0]) == len(per_rank[1]) == 3
    for k, (x, y) in enumerate(single):
        torch.testing.assert_close(torch.cat([per_rank[0][k][0], per_rank[1][k][0]]), x)
        assert torch.equal(torch.cat([per_rank[0][k][1], per_rank[1][k][1]]), y)


def test_workers_do_not_change_the_batches(data_root):
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    in_process = batches(ImageNetLoader(train, 4, True, seed=2, num_workers=0))
    loader = ImageNetLoader(train, 4, True, seed=2, num_workers=2, prefetch_factor=2)
    assert loader._loader.persistent_workers and loader._loader.prefetch_factor == 2
    for (x0, y0), (x1, y1) in zip(in_process, batches(loader), strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_make_imagenet_loader(data_root):
    train = load_imagefolder_dataset("imagenet", "train", data_root, **SIZES)
    loader = make_imagenet_loader("torch", train, 3, True, 0, num_workers=0, rank=1, world_size=2)
    assert isinstance(loader, ImageNetLoader) and loader.rank == 1 and len(loader) == 2
    assert IMAGENET_LOADER_KINDS == ("torch", "nvjpeg")
    with pytest.raises(ValueError, match="'gpu'; accepted: torch, nvjpeg"):
        make_imagenet_loader("gpu", train, 3, True, 0)
