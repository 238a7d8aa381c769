"""The "nvjpeg" loader (GPU JPEG decoding), tested on the CPU against the PIL path.

On the CPU ``torchvision.io.decode_jpeg`` runs libjpeg-turbo instead of nvJPEG; everything else
(routing, crop plans, the tensor geometry, sharding, prefetching) is the code that runs on CUDA.
The PIL path (:class:`ImageNetLoader`) is the reference: the crop boxes and flips it draws are
read from torchvision's own calls (spied on), not from our code.

Pixel tolerance. Measured on this machine: torchvision's CPU decoder and Pillow's give identical
pixels (both libjpeg-turbo: max and mean difference 0 on 500x375 quality-90 JPEGs), and the
tensor resize (antialiased bilinear) differs from PIL's by at most 1 grey level, 0.14-0.21 on
average. The tolerance is max 2 grey levels and mean 0.5: one level of margin for libjpeg builds
whose IDCT rounds differently (torchvision and Pillow wheels each bundle their own). A wrong flip
or a one-pixel shift of the crop is tens of grey levels on these textured images, which
``test_the_tolerance_rejects_a_wrong_flip`` checks.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ckd_lib.config import ConfigError, RunConfig
from ckd_lib.data import (
    IMAGENET_STD,
    ImageNetLoader,
    NvJpegLoader,
    jpeg_decode,
    load_imagefolder_dataset,
    make_imagenet_loader,
)
from ckd_lib.data.folder_geometry import EvalGeometry, TrainGeometry, geometry_of
from ckd_lib.data.imagefolder import imagenet_transform
from ckd_lib.data.jpeg_samples import decode_with_pil, read_sample
from ckd_lib.data.prefetch import prepared_ahead

SIZES = {"crop_size": 48, "resize_size": 56}
CPU = torch.device("cpu")
MAX_GREY_LEVELS = 2.0
MEAN_GREY_LEVELS = 0.5


def textured(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour regions plus fine noise: photo-like JPEG sizes, and any shift shows."""
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    noise = rng.integers(-16, 17, smooth.shape)
    return np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)


def write_folder(root, rng, per_class=5, val=2, classes=3, odd=False):
    """An ImageNet-layout folder of quality-90 JPEGs of varied sizes (64..128 px a side).
    ``odd``: the first val class also holds a CMYK JPEG, a greyscale JPEG and a PNG file
    named .JPEG, as ImageNet does."""
    for c in range(classes):
        for split, n in (("train", per_class), ("val", val)):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(64, 129, 2))
                Image.fromarray(textured(rng, h, w)).save(folder / f"{i}.JPEG", quality=90)
    if odd:
        folder = root / "imagenet" / "val" / f"n{0:08d}"
        image = Image.fromarray(textured(rng, 72, 100))
        image.convert("CMYK").save(folder / "x_cmyk.JPEG", quality=95)
        image.convert("L").save(folder / "x_grey.JPEG", quality=95)
        image.save(folder / "x_png.JPEG", format="PNG")
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"), np.random.default_rng(0))


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("odd"), np.random.default_rng(1), per_class=2,
                        odd=True)


def dataset(root, split):
    return load_imagefolder_dataset("imagenet", split, root, **SIZES)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of normalised images, in grey levels of the 0..255 input."""
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (a - b).abs() * std * 255


def assert_close_to_pil(reference, ours):
    assert len(reference) == len(ours)
    worst, means = 0.0, []
    for (x0, y0), (x1, y1) in zip(reference, ours, strict=True):
        assert torch.equal(y0, y1)
        assert x1.shape == x0.shape and x1.dtype == torch.float32
        diff = grey_levels(x0, x1)
        worst, means = max(worst, diff.max().item()), [*means, diff.mean().item()]
    assert worst <= MAX_GREY_LEVELS + 1e-3, worst
    assert max(means) <= MEAN_GREY_LEVELS, means


class CallLog:
    """Records torchvision's geometry calls (PIL path and ours alike) in call order."""

    def __init__(self, monkeypatch, names):
        self.calls = []
        self.lock = threading.Lock()
        for name in names:
            original = getattr(TF, name)
            monkeypatch.setattr(TF, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def spy(img, *args, **kwargs):
            out = original(img, *args, **kwargs)
            if name == "resized_crop":
                entry = (name, *(int(a) for a in args[:4]), tuple(args[4]))
            else:  # the size of what came out, read the same way for PIL images and tensors
                entry = (name, tuple(TF.get_dimensions(out)[1:]))
            with self.lock:
                self.calls.append(entry)
            return out

        return spy


# ---------------------------------------------------------------------------- equal to the PIL path
def test_crop_boxes_flips_and_labels_equal_the_pil_path(data_root, monkeypatch):
    """The PIL path's boxes and flips as torchvision's transforms applied them (spied on)
    against the plans our workers drew, sample by sample."""
    train = dataset(data_root, "train")
    log = CallLog(monkeypatch, ["resized_crop", "hflip"])
    pil = ImageNetLoader(train, 4, True, seed=7, num_workers=0)
    pil.set_epoch(2)
    pil_labels = torch.cat([y for _, y in pil]).tolist()
    pil_calls = log.calls
    monkeypatch.undo()

    plans = []
    draw = TrainGeometry.plan

    def recording(self, image, sample_seed):
        plans.append(draw(self, image, sample_seed))
        return plans[-1]

    monkeypatch.setattr(TrainGeometry, "plan", recording)
    ours = NvJpegLoader(train, 4, True, seed=7, num_workers=0, device=CPU)
    ours.set_epoch(2)
    our_labels = torch.cat([y for _, y in ours]).tolist()
    our_calls = []
    for top, left, height, width, flipped in plans:
        our_calls.append(("resized_crop", top, left, height, width, (48, 48)))
        our_calls += [("hflip", (48, 48))] if flipped else []
    assert our_calls == pil_calls and our_labels == pil_labels
    crops = [c for c in pil_calls if c[0] == "resized_crop"]
    flips = len(pil_calls) - len(crops)
    assert len(crops) == 12 and 0 < flips < 12  # drop_last: 3 batches of 4; some flipped


@pytest.mark.parametrize("split", ["train", "val"])
def test_pixels_agree_with_the_pil_path(data_root, split):
    ds = dataset(data_root, split)
    train = split == "train"
    reference = batches(ImageNetLoader(ds, 4, train, seed=3, num_workers=0))
    ours = batches(NvJpegLoader(ds, 4, train, seed=3, num_workers=0, device=CPU))
    assert_close_to_pil(reference, ours)


def test_the_tolerance_rejects_a_wrong_flip(data_root):
    val = dataset(data_root, "val")
    (reference, labels), *_ = batches(ImageNetLoader(val, 4, False, seed=0, num_workers=0))
    (ours, _), *_ = batches(NvJpegLoader(val, 4, False, seed=0, num_workers=0, device=CPU))
    with pytest.raises(AssertionError):
        assert_close_to_pil([(reference, labels)], [(ours.flip(-1), labels)])
    with pytest.raises(AssertionError):  # a crop one pixel off
        shifted = torch.cat([ours[..., 1:], ours[..., -1:]], dim=-1)
        assert_close_to_pil([(reference, labels)], [(shifted, labels)])


def test_validation_geometry_is_resize_then_centre_crop(data_root, monkeypatch):
    val = dataset(data_root, "val")
    seen = {}
    for name, loader in (("pil", ImageNetLoader(val, 3, False, seed=0, num_workers=0)),
                         ("ours", NvJpegLoader(val, 3, False, seed=0, num_workers=0,
                                               device=CPU))):
        log = CallLog(monkeypatch, ["resize", "center_crop"])
        list(loader)
        seen[name] = log.calls
        monkeypatch.undo()
    assert seen["ours"] == seen["pil"]
    resized = [c[1] for c in seen["pil"] if c[0] == "resize"]
    assert len(resized) == 6 and all(min(hw) == 56 for hw in resized)
    assert {c[1] for c in seen["pil"] if c[0] == "center_crop"} == {(48, 48)}


# ---------------------------------------------------------------------------- decoding routes
def test_each_fallback_kind_decodes_to_its_rgb_content(tmp_path):
    source = textured(np.random.default_rng(5), 70, 90)
    image = Image.fromarray(source)
    image.convert("CMYK").save(tmp_path / "cmyk.JPEG", quality=95)
    image.convert("L").save(tmp_path / "grey.JPEG", quality=95)
    image.save(tmp_path / "png.JPEG", format="PNG")  # a PNG under a JPEG name
    image.save(tmp_path / "rgb.JPEG", quality=95)
    geometry = geometry_of(imagenet_transform(False, 48, 56))
    samples = [read_sample(str(tmp_path / f"{k}.JPEG"), 0, geometry, None)
               for k in ("cmyk", "grey", "png", "rgb")]
    assert [s.encoded for s in samples] == [False, False, False, True]  # only RGB JPEG to nvJPEG
    counts = Counter()
    cmyk, grey, png, rgb = (t.permute(1, 2, 0).numpy().astype(int) for t in jpeg_decode.decode_rgb(
        [s.payload for s in samples], [s.encoded for s in samples], CPU, counts))
    assert counts == {jpeg_decode.IN_WORKER: 3, jpeg_decode.ON_DEVICE: 1}
    assert np.array_equal(png, source)  # lossless
    grey_truth = np.asarray(image.convert("L")).astype(int)
    assert (grey == grey[..., :1]).all()  # three equal channels
    # JPEG loss at quality 95 on this noisy texture, measured: mean 0.4 (grey), 1.5 (CMYK);
    # an inverted CMYK decode, or channels swapped, would be off by ~100 levels on average.
    assert np.abs(grey[..., 0] - grey_truth).mean() < 3
    cmyk_error = np.abs(cmyk - source)
    assert cmyk_error.mean() < 3 and cmyk_error.max() <= 32
    pil_rgb = np.asarray(Image.open(tmp_path / "rgb.JPEG").convert("RGB")).astype(int)
    assert np.abs(rgb - pil_rgb).max() <= MAX_GREY_LEVELS
    assert all(t.shape == (70, 90, 3) for t in (cmyk, grey, png, rgb))


def test_a_folder_with_odd_files_matches_the_pil_path(odd_root):
    val = dataset(odd_root, "val")
    loader = NvJpegLoader(val, 4, False, seed=0, num_workers=0, device=CPU)
    assert_close_to_pil(batches(ImageNetLoader(val, 4, False, seed=0, num_workers=0)),
                        batches(loader))
    assert loader.decode_counts == {jpeg_decode.IN_WORKER: 3, jpeg_decode.ON_DEVICE: 6}


def test_a_refused_jpeg_is_retried_alone_then_decoded_with_pil(data_root, monkeypatch):
    paths = [path for path, _ in dataset(data_root, "val").samples[:4]]
    payloads = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in paths]
    bad = payloads[2]
    real = jpeg_decode.decode_jpeg
    calls = []

    def refusing(data, **kwargs):  # as if nvJPEG rejected the third file
        calls.append(len(data) if isinstance(data, list) else 1)
        batch = data if isinstance(data, list) else [data]
        if any(d is bad for d in batch):
            raise RuntimeError("Error while decoding JPEG images")
        return real(data, **kwargs)

    monkeypatch.setattr(jpeg_decode, "decode_jpeg", refusing)
    counts = Counter()
    out = jpeg_decode.decode_rgb(payloads, [True] * 4, CPU, counts)
    assert calls == [4, 1, 1, 1, 1]
    assert counts == {jpeg_decode.RETRIED_ALONE: 3, jpeg_decode.PIL_AFTER_FAILURE: 1}
    for image, path in zip(out, paths, strict=True):
        with open(path, "rb") as f:
            truth = decode_with_pil(f.read())
        assert (image.int() - truth.int()).abs().max().item() <= MAX_GREY_LEVELS


# ---------------------------------------------------------------------------- loader contract
def test_two_ranks_together_give_the_single_process_batches(data_root):
    train = dataset(data_root, "train")
    single = batches(NvJpegLoader(train, 4, True, seed=5, num_workers=0, device=CPU))
    loaders = [NvJpegLoader(train, 2, True, seed=5, num_workers=0, rank=r, world_size=2,
                            device=CPU) for r in range(2)]
    shares = [{i for i, _ in loader.epoch_keys(0)} for loader in loaders]
    assert not shares[0] & shares[1] and len(shares[0]) == len(shares[1]) == 7
    ranks = [batches(loader) for loader in loaders]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 3
    for k, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), x)
        assert torch.equal(torch.cat([ranks[0][k][1], ranks[1][k][1]]), y)


def test_epochs_replay_exactly_and_workers_change_nothing(data_root):
    train = dataset(data_root, "train")
    loader = NvJpegLoader(train, 4, True, seed=1, num_workers=0, device=CPU)
    state = torch.get_rng_state()
    first = batches(loader)
    assert torch.equal(state, torch.get_rng_state())  # the per-sample seeding is restored
    second = batches(loader)
    assert loader.epoch == 2
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    loader.set_epoch(0)
    for (x0, y0), (x1, y1) in zip(first, batches(loader), strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    workers = NvJpegLoader(train, 4, True, seed=1, num_workers=2, prefetch_factor=2, device=CPU)
    for (x0, y0), (x1, y1) in zip(first, batches(workers), strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_lengths_order_and_memory_format(data_root):
    train, val = dataset(data_root, "train"), dataset(data_root, "val")
    loader = NvJpegLoader(train, 4, True, seed=0, num_workers=0, device=CPU, channels_last=True)
    assert loader.drop_last and len(loader) == 3 and loader.num_samples == 15
    x, y = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (4, 3, 48, 48)
    assert y.dtype == torch.int64 and x.device == y.device == CPU
    evaluation = NvJpegLoader(val, 4, False, seed=0, num_workers=0, device=CPU)
    assert not evaluation.drop_last and len(evaluation) == 2
    assert torch.cat([y for _, y in evaluation]).tolist() == val.targets
    assert evaluation.epoch_keys(0) == [(i, None) for i in range(6)]


def test_stopping_early_leaves_the_loader_usable(data_root):
    train = dataset(data_root, "train")
    loader = NvJpegLoader(train, 2, True, seed=0, num_workers=0, device=CPU, prefetch_batches=3)
    for _ in loader:
        break
    loader.set_epoch(0)
    assert len(batches(loader)) == 7


def test_prepared_ahead_keeps_order_and_raises_where_it_failed():
    assert list(prepared_ahead(range(7), lambda i: i * i, depth=2)) == [i * i for i in range(7)]

    def fails_at_3(i):
        if i == 3:
            raise KeyError(i)
        return i

    got = []
    with pytest.raises(KeyError):
        for value in prepared_ahead(range(6), fails_at_3, depth=2):
            got.append(value)
    assert got == [0, 1, 2]
    with pytest.raises(ValueError, match="depth must be >= 1"):
        list(prepared_ahead(range(2), int, depth=0))


def test_transforms_other_than_the_imagenet_ones_are_refused(data_root):
    val = dataset(data_root, "val")
    assert isinstance(geometry_of(val.transform), EvalGeometry)
    other = val.select(range(6))
    other.transform = TF.to_tensor
    with pytest.raises(ValueError, match="this dataset's transform is \\['function'\\]"):
        NvJpegLoader(other, 2, False, seed=0, device=CPU)
    with pytest.raises(ValueError, match="evaluation order"):
        NvJpegLoader(dataset(data_root, "train"), 2, False, seed=0, device=CPU)
    nearest = dataset(data_root, "train")
    nearest.transform.transforms[0].interpolation = TF.InterpolationMode.NEAREST
    with pytest.raises(ValueError, match="resizes bilinearly.*RandomResizedCrop uses nearest"):
        NvJpegLoader(nearest, 2, True, seed=0, device=CPU)


def test_loader_names_in_the_factory_and_the_config(data_root):
    loader = make_imagenet_loader("nvjpeg", dataset(data_root, "train"), 3, True, 0,
                                  num_workers=0, rank=1, world_size=2, device="cpu")
    assert isinstance(loader, NvJpegLoader) and loader.rank == 1 and len(loader) == 2
    with pytest.raises(ConfigError, match="loader='dali'.*accepted.*'nvjpeg'"):
        RunConfig(student="ResNet18", method="CE", dataset="imagenet", loader="dali").validate()
    with pytest.raises(ConfigError, match="loader='nvjpeg' decodes JPEG folders"):
        RunConfig(student="resnet8", method="CE", dataset="cifar100", loader="nvjpeg").validate()


def test_the_engine_trains_with_it(data_root, tmp_path):
    from ckd_lib.engine import train

    cfg = RunConfig(student="ResNet18", method="CKD", dataset="imagenet",
                    data_root=str(data_root), teacher="ResNet18", teacher_checkpoint="untrained",
                    epochs=1, lr=0.01, schedule="cosine", batch_size=5, weight_decay=1e-4,
                    device="cpu", loader="nvjpeg", num_workers=0, eval_batch_size=6,
                    out_dir=str(tmp_path / "runs"), progress=False)
    (record,) = train(cfg)
    assert record["status"] == "complete" and record["speed"]["loader"] == "nvjpeg"
    assert record["history"][0]["train_images"] == 15 and record["data"]["test_size"] == 6
    assert np.isfinite(record["history"][0]["loss_ckd"])



@pytest.mark.parametrize("kind", ["nvjpeg", "torch"])
def test_a_pass_resumed_at_batch_k_yields_the_rest_of_the_epoch(data_root, kind):
    """set_epoch(e, start_batch=k): the batches an uninterrupted pass yields from k on."""
    from ckd_lib.data import ImageNetLoader

    train = dataset(data_root, "train")
    if kind == "nvjpeg":
        loader = NvJpegLoader(train, 4, True, seed=2, num_workers=0, device=CPU)
    else:
        loader = ImageNetLoader(train, 4, True, seed=2, num_workers=0)
    loader.set_epoch(1)
    whole = batches(loader)
    loader.set_epoch(1, start_batch=2)
    rest = batches(loader)
    assert len(rest) == len(whole) - 2
    for (x0, y0), (x1, y1) in zip(whole[2:], rest, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert len(batches(loader)) == len(whole)  # the next pass is whole again
