"""Tests of ckd_lib.data: datasets, the IDX reader, and the two loaders (CPU only, fast)."""

from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ckd_lib.data import (
    DatasetNotFoundError,
    GpuLoader,
    ImageDataset,
    TorchLoader,
    load_dataset,
    make_loader,
    parse_idx,
    read_idx,
    stratified_indices,
)
from ckd_lib.data import fashion_mnist as fm

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_DEBIAN_FMNIST = all(
    (DEBIAN_DIR / f"{s}.gz").is_file() for s in fm.FILES["train"] + fm.FILES["test"]
)


# ---------------------------------------------------------------------------- helpers
def noise_dataset(n: int = 96, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), seed: int = 0):
    """Images of independent uniform noise (each one a unique pattern, every crop unique);
    label i marks image i, so a batch tells which source image each output came from."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n), n, mean, std, name="noise")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Invert x/255 (datasets with mean 0, std 1) exactly."""
    y = x.double() * 255.0
    assert torch.allclose(y, y.round(), atol=1e-3)
    return y.round().to(torch.uint8)


def crop_matches(source: torch.Tensor, out: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Brute force over the 81 offsets x flip: which (dy, dx, flip) turn ``source`` into ``out``
    under RandomCrop(32, padding=4) followed by a horizontal flip."""
    padded = F.pad(source, (4, 4, 4, 4))
    windows = padded.unfold(1, 32, 1).unfold(2, 32, 1).permute(1, 2, 0, 3, 4)  # [9, 9, 3, 32, 32]
    found = []
    for flip in (False, True):
        target = out.flip(-1) if flip else out
        eq = (windows == target).flatten(2).all(-1)
        found += [(dy, dx, flip) for dy, dx in eq.nonzero().tolist()]
    return found


def collect(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def check_crops(dataset: ImageDataset, batches) -> list[tuple[int, int, bool]]:
    """Every output is exactly one crop(+flip) of its source image; returns the parameters."""
    params = []
    for x, y in batches:
        for out, idx in zip(to_uint8(x), y.tolist(), strict=True):
            found = crop_matches(dataset.images[idx], out)
            assert len(found) == 1, f"sample {idx}: {len(found)} matching crops"
            params.append(found[0])
    return params


# ---------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_and_determinism():
    a = load_dataset("synthetic", "train")
    b = load_dataset("synthetic", "train")
    assert a.images.shape == (1000, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.images.is_contiguous() and a.labels.dtype == torch.int64
    assert a.num_classes == 10 and len(a.mean) == 3 and len(a.std) == 3
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    assert torch.bincount(a.labels).tolist() == [100] * 10
    test = load_dataset("synthetic", "test")
    assert test.images.shape[0] == 200 and test.mean == a.mean and test.std == a.std
    assert test.fingerprint() != a.fingerprint()
    other = load_dataset("synthetic", "train", data_seed=1)
    assert other.fingerprint() != a.fingerprint()


def test_synthetic_params_by_name_or_kwargs():
    a = load_dataset("synthetic:num_classes=4,num_train=40,noise=0.25", "train")
    b = load_dataset("synthetic", "train", num_classes=4, num_train=40, noise=0.25)
    assert a.fingerprint() == b.fingerprint()
    assert a.num_classes == 4 and len(a) == 40 and a.name == b.name
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("synthetic", "train", num_clases=3)


def test_synthetic_classes_are_learnable():
    """Nearest class mean of the train split classifies the test split: shared templates."""
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    xtr, xte = train.images.flatten(1).double(), test.images.flatten(1).double()
    centres = torch.stack([xtr[train.labels == c].mean(0) for c in range(train.num_classes)])
    pred = torch.cdist(xte, centres).argmin(1)
    assert (pred == test.labels).double().mean() > 0.9


# ---------------------------------------------------------------------------- subsets
def test_subset_stratified_and_seeded():
    full = load_dataset("synthetic", "train")
    a = load_dataset("synthetic", "train", subset=200, seed=5)
    b = load_dataset("synthetic", "train", subset=200, seed=5)
    c = load_dataset("synthetic", "train", subset=200, seed=6)
    assert len(a) == 200 and a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert torch.bincount(a.labels, minlength=10).tolist() == [20] * 10
    idx = stratified_indices(full.labels, 200, seed=5)
    assert torch.equal(a.images, full.images[idx]) and len(set(idx.tolist())) == 200
    odd = stratified_indices(full.labels, 25, seed=0)
    assert sorted(torch.bincount(full.labels[odd], minlength=10).tolist()) == [2] * 5 + [3] * 5
    with pytest.raises(ValueError):
        load_dataset("synthetic", "train", subset=1001)


def test_fingerprint_covers_labels():
    d = load_dataset("synthetic", "test")
    labels = d.labels.clone()
    labels[0] = (labels[0] + 1) % d.num_classes
    e = ImageDataset(d.images, labels, d.num_classes, d.mean, d.std, d.name)
    assert e.fingerprint() != d.fingerprint()


# ---------------------------------------------------------------------------- IDX / Fashion-MNIST
def write_idx_by_hand(path: Path, code: int, array: np.ndarray, dtype: str) -> None:
    """Independent IDX writer (struct + gzip), the truth the reader is checked against."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(dtype).tobytes()))


def test_idx_parser_on_handwritten_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 3], dtype=np.uint8)
    write_idx_by_hand(tmp_path / "train-images-idx3-ubyte.gz", 0x08, images, "u1")
    write_idx_by_hand(tmp_path / "train-labels-idx1-ubyte.gz", 0x08, labels, "u1")
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)

    shorts = np.array([[1, -2], [300, -20000]], dtype=np.int16)
    write_idx_by_hand(tmp_path / "s.gz", 0x0B, shorts, ">i2")
    assert np.array_equal(read_idx(tmp_path / "s.gz"), shorts)

    d = load_dataset("fashion_mnist", "train", data_root=tmp_path, download=False)
    assert d.images.shape == (5, 3, 32, 32) and d.num_classes == 10
    assert d.labels.tolist() == [3, 0, 9, 1, 3]
    for c in range(3):  # grey replicated, 2-px zero border
        assert np.array_equal(d.images[:, c, 2:30, 2:30].numpy(), images)
    border = d.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0
    assert d.mean == fm.MEAN and d.std == fm.STD


def test_idx_parser_rejects_bad_files():
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="holds"):
        parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x03ab")


@pytest.mark.skipif(not HAVE_DEBIAN_FMNIST, reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_and_constants(tmp_path):
    train = load_dataset("fashion_mnist", "train", data_root=tmp_path, download=False)
    test = load_dataset("fashion_mnist", "test", data_root=tmp_path, download=False)
    assert train.images.shape == (60000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    # Exact statistics from the histogram of grey levels of the padded training images.
    counts = torch.bincount(train.images[:, 0].flatten(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = float((counts * levels).sum() / counts.sum())
    std = float(((counts * levels**2).sum() / counts.sum() - mean**2).sqrt())
    assert all(abs(m - mean) < 5e-5 for m in train.mean)
    assert all(abs(s - std) < 5e-5 for s in train.std)


def test_fashion_mnist_missing_files_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion_mnist", "test", data_root=tmp_path / "empty", download=False)
    msg = str(info.value)
    assert str(tmp_path / "empty") in msg and "apt-get install dataset-fashion-mnist" in msg


# ---------------------------------------------------------------------------- CIFAR
def write_tiny_cifar100(root: Path, n_train: int = 6, n_test: int = 4) -> np.ndarray:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    for name, n, x in (("train", n_train, data), ("test", n_test, data[:n_test])):
        entry = {b"data": x, b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {b"fine_label_names": [f"c{i}" for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return data


def test_cifar100_reads_python_pickles(tmp_path):
    data = write_tiny_cifar100(tmp_path)
    d = load_dataset("cifar100", "train", data_root=tmp_path, download=False)
    assert d.images.shape == (6, 3, 32, 32) and d.num_classes == 100
    assert np.array_equal(d.images.numpy().reshape(6, -1), data)
    assert d.labels.tolist() == list(range(6)) and d.classes[5] == "c5"
    assert d.mean == CIFAR100_MEAN and d.std == CIFAR100_STD
    assert len(load_dataset("cifar100", "test", data_root=tmp_path, download=False)) == 4


def test_cifar100_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar100", "train", data_root=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / "cifar-100-python") in msg
    assert "cifar-100-python.tar.gz" in msg and "data_root" in msg


def test_cifar_download_failure_is_reported_plainly(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "test", data_root=tmp_path)
    msg = str(info.value)
    assert "Downloading failed" in msg and "cifar-10-batches-py" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_bad_names_list_accepted_values():
    with pytest.raises(ValueError, match="imagenet.*cifar100.*fashion_mnist.*synthetic"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="'val'.*train, test"):
        load_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="'nvjpeg'; accepted: gpu, torch"):
        make_loader("nvjpeg", load_dataset("synthetic", "test"), 8, False, 0)


# ---------------------------------------------------------------------------- GpuLoader
def test_gpu_loader_crops_are_exact_and_per_sample():
    d = noise_dataset(n=512)
    batches = collect(GpuLoader(d, 64, True, "cpu", seed=0))
    params = check_crops(d, batches)
    assert len(params) == 512
    for i in range(0, 512, 64):  # per-sample augmentation: crops within a batch differ
        assert len(set(params[i : i + 64])) > 32
    assert {p[0] for p in params} == set(range(9)) and {p[1] for p in params} == set(range(9))
    flips = sum(p[2] for p in params)  # Binomial(512, 0.5): mean 256, sd ~11.3
    assert 200 < flips < 312


def test_gpu_loader_epoch_covers_every_sample_once():
    d = noise_dataset(n=100)
    loader = GpuLoader(d, 32, True, "cpu", seed=3)
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(labels.sort().values, torch.arange(100))
    assert not torch.equal(labels, torch.arange(100))  # shuffled


def test_gpu_loader_same_seed_epoch_same_batches():
    d = noise_dataset(n=100, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    a, b = GpuLoader(d, 16, True, "cpu", seed=7), GpuLoader(d, 16, True, "cpu", seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert same_batches(collect(a), collect(b))
    a.set_epoch(3)
    epoch3 = collect(a)
    b.set_epoch(4)
    epoch4 = collect(b)
    assert not same_batches(epoch3, epoch4)
    assert not torch.equal(torch.cat([y for _, y in epoch3]), torch.cat([y for _, y in epoch4]))
    other_seed = GpuLoader(d, 16, True, "cpu", seed=8)
    other_seed.set_epoch(3)
    assert not same_batches(collect(other_seed), epoch3)


def test_gpu_loader_resume_replays_epoch():
    """An uninterrupted run and a run resumed at epoch 2 see identical epoch-2 batches;
    iterating without set_epoch advances the epoch."""
    d = noise_dataset(n=50)
    run = GpuLoader(d, 16, True, "cpu", seed=1)
    epochs = [collect(run) for _ in range(3)]
    assert run.epoch == 3
    resumed = GpuLoader(d, 16, True, "cpu", seed=1)
    resumed.set_epoch(2)
    assert same_batches(collect(resumed), epochs[2])
    assert not same_batches(epochs[0], epochs[1])


def test_gpu_loader_len_and_drop_last():
    d = noise_dataset(n=100)
    for drop_last, sizes in ((False, [32, 32, 32, 4]), (True, [32, 32, 32])):
        loader = GpuLoader(d, 32, True, "cpu", seed=0, drop_last=drop_last)
        batches = collect(loader)
        assert len(loader) == len(sizes) and [len(y) for _, y in batches] == sizes
        assert len(set(torch.cat([y for _, y in batches]).tolist())) == sum(sizes)
    assert len(GpuLoader(d, 100, False, "cpu", seed=0, drop_last=True)) == 1


def test_gpu_loader_test_mode_normalisation_exact():
    d = noise_dataset(n=70, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    loader = GpuLoader(d, 32, False, "cpu", seed=0)
    x = torch.cat([b for b, _ in loader])
    y = torch.cat([b for _, b in loader])
    assert x.dtype == torch.float32 and torch.equal(y, torch.arange(70))  # no shuffle
    mean = torch.tensor(CIFAR100_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (d.images.double() / 255.0 - mean) / std
    assert (x.double() - expected).abs().max() < 1e-6


def test_gpu_loader_channels_last_and_dtype():
    d = noise_dataset(n=40, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    for train in (True, False):
        plain = collect(GpuLoader(d, 16, train, "cpu", seed=2))
        cl_loader = GpuLoader(d, 16, train, "cpu", seed=2, channels_last=True)
        cl = collect(cl_loader)
        assert same_batches(plain, cl)
        for x, _ in cl_loader:
            assert x.is_contiguous(memory_format=torch.channels_last)
        half = collect(GpuLoader(d, 16, train, "cpu", seed=2, dtype=torch.bfloat16))
        assert half[0][0].dtype == torch.bfloat16
        assert torch.allclose(half[0][0].float(), plain[0][0], atol=0.02)


# ---------------------------------------------------------------------------- TorchLoader
def test_torch_loader_shapes_normalisation_and_crops():
    d = noise_dataset(n=40, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    test_batches = collect(TorchLoader(d, 16, False, seed=0, num_workers=0))
    gpu_batches = collect(GpuLoader(d, 16, False, "cpu", seed=0))
    assert [x.shape for x, _ in test_batches] == [(16, 3, 32, 32)] * 2 + [(8, 3, 32, 32)]
    for (xt, yt), (xg, yg) in zip(test_batches, gpu_batches, strict=True):
        assert xt.dtype == torch.float32 and yt.dtype == torch.int64
        assert torch.equal(yt, yg) and (xt - xg).abs().max() < 1e-6

    raw = noise_dataset(n=64)
    train_loader = TorchLoader(raw, 16, True, seed=0, num_workers=0)
    params = check_crops(raw, collect(train_loader))
    assert len(set(params)) > 40
    assert len(train_loader) == 4
    assert len(TorchLoader(raw, 30, True, seed=0, num_workers=0, drop_last=True)) == 2


def test_torch_loader_deterministic_and_worker_independent():
    d = noise_dataset(n=48, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    a = TorchLoader(d, 16, True, seed=4, num_workers=0)
    b = TorchLoader(d, 16, True, seed=4, num_workers=0)
    rng_before = torch.get_rng_state()
    a.set_epoch(2)
    b.set_epoch(2)
    first = collect(a)
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG untouched
    assert same_batches(first, collect(b))
    assert not same_batches(first, collect(b))  # b advanced to epoch 3
    labels = torch.cat([y for _, y in first])
    assert torch.equal(labels.sort().values, torch.arange(48))

    workers = TorchLoader(d, 16, True, seed=4, num_workers=2)
    workers.set_epoch(2)
    assert same_batches(first, collect(workers))


def test_make_loader_kinds():
    d = load_dataset("synthetic", "test")
    gpu = make_loader("gpu", d, 32, True, 0, device="cpu", channels_last=True)
    assert isinstance(gpu, GpuLoader) and gpu.channels_last
    torch_loader = make_loader("torch", d, 32, False, 0, num_workers=0)
    assert isinstance(torch_loader, TorchLoader) and len(torch_loader) == 7
    x, y = next(iter(gpu))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)


@pytest.mark.parametrize("kind", ["gpu", "torch"])
def test_a_pass_resumed_at_batch_k_yields_the_rest_of_the_epoch(kind):
    """set_epoch(e, start_batch=k) gives what an uninterrupted pass yields from batch k on, the
    partial last batch included; the next pass is a whole epoch again."""
    d = noise_dataset(n=100)
    loader = (GpuLoader(d, 16, True, "cpu", seed=5) if kind == "gpu"
              else TorchLoader(d, 16, True, seed=5, num_workers=0))
    loader.set_epoch(3)
    whole = collect(loader)
    loader.set_epoch(3, start_batch=4)
    rest = collect(loader)
    assert len(whole) == 7 and len(rest) == 3
    for (x0, y0), (x1, y1) in zip(whole[4:], rest, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert len(collect(loader)) == 7
