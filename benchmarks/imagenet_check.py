"""GPU check for the ImageNet path: ResNet34 → ResNet18 CKD at batch 512 on generated JPEGs.

    python benchmarks/imagenet_check.py --out DIR [--images 4096] [--smoke]

Writes an ImageFolder of random JPEGs (ImageNet-like sizes), then measures images/s of
(1) the tuned DataLoader alone, (2) the training step alone on device-resident tensors (the
arithmetic ceiling), (3) the engine end to end (DataLoader + bf16 + channels_last; no CUDA graph at
this size). DALI is measured when it is importable and reported as absent otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ckd_lib.config import RunConfig  # noqa: E402
from ckd_lib.data import load_imagefolder_dataset, make_imagenet_loader  # noqa: E402
from ckd_lib.engine import train  # noqa: E402


def _write_class(args):
    folder, count, seed = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = int(rng.integers(300, 500)), int(rng.integers(300, 500))
        coarse = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        image.save(folder / f"{i:05d}.JPEG", quality=85)


def make_folder(root: Path, images: int, classes: int = 100) -> Path:
    per_class = max(1, images // classes)
    jobs = [(root / "imagenet" / split / f"n{c:08d}", n, c * 7 + (split == "val"))
            for split, n in (("train", per_class), ("val", max(1, per_class // 8)))
            for c in range(classes)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_class, jobs))
    return root


def loader_rate(root, batch, workers, kind="torch"):
    """Images/s of one whole epoch of the loader alone, worker start-up included."""
    dataset = load_imagefolder_dataset("imagenet", "train", root)
    extra = {"num_workers": workers} if kind == "torch" else {}
    loader = make_imagenet_loader(kind, dataset, batch, train=True, seed=0, **extra)
    loader.set_epoch(0)
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def step_rate(batch, steps=10):
    from ckd_lib.losses import ckd_loss
    from ckd_lib.models import create_model

    dev = torch.device("cuda")
    teacher = create_model("ResNet34", 1000, dataset="imagenet").to(dev).eval()
    student = create_model("ResNet18", 1000, dataset="imagenet").to(dev)
    teacher = teacher.to(memory_format=torch.channels_last)
    student = student.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                logits_t = teacher(x)
            logits_s = student(x)
            loss = torch.nn.functional.cross_entropy(logits_s.float(), y) + 10 * ckd_loss(
                logits_s, logits_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.smoke
    summary = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if cuda else "cpu",
               "cpu_cores": os.cpu_count(), "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = make_folder(Path(tmp), args.images, classes=10 if args.smoke else 100)
        summary["generate_seconds"] = time.perf_counter() - t0
        summary["dataloader_images_per_s"] = loader_rate(root, args.batch, args.workers)
        print(summary, flush=True)
        try:
            import nvidia.dali  # noqa: F401

            summary["dali_images_per_s"] = loader_rate(root, args.batch, 0, kind="dali")
        except ImportError:
            summary["dali_images_per_s"] = "DALI not installed on this machine"
        if cuda:
            summary["step_only_images_per_s"] = step_rate(args.batch)
            print(summary, flush=True)
        cfg = RunConfig.from_recipe(
            "imagenet", "ResNet34", "ResNet18", "CKD", teacher_checkpoint="untrained",
            data_root=str(root), epochs=3, num_workers=args.workers,
            batch_size=args.batch if not args.smoke else 8, device="cuda" if cuda else "cpu",
            out_dir=str(Path(tmp) / "runs"), progress=False, eval_batch_size=args.batch)
        (record,) = train(cfg)
        steady = record["history"][1:]
        summary["engine_images_per_s"] = (sum(h["train_images"] for h in steady)
                                          / sum(h["train_seconds"] for h in steady))
        summary["engine_speed"] = record["speed"]
    print(json.dumps(summary, indent=1))
    (out / "imagenet_check.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
