"""Section (b): ImageNet ResNet34 -> ResNet18 CKD at batch 512, bf16: how close to the step.

On a folder of generated ImageNet-like JPEGs (:mod:`benchmarks.checks.jpeg_folder`; each file
listed a few times, so that an epoch holds 48 batches), through the engine
(:mod:`benchmarks.checks.engine_runs`), two epochs each, the first excluded:

1. the step alone on resident tensors (the ceiling);
2. end to end with GPU decoding ("nvjpeg");
3. end to end with the PIL DataLoader ("torch", one worker per core);
then each loader alone for one epoch (worker start included), and last (so that a decoder
failure cannot cost the figures above): nvJPEG's pixels against PIL's, and what the device
decoder does with each odd file. Which loader is faster end to end is recorded, so the engine's
"auto" choice for image folders can follow the measurement.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from ckd_lib.config import RunConfig
from ckd_lib.data import jpeg_decode, load_imagefolder_dataset, make_imagenet_loader
from ckd_lib.data.jpeg_samples import decode_with_pil

from . import targets
from .engine_runs import imagenet_config, steady_images_per_s, train_once
from .jpeg_folder import link_copies, make_imagefolder
from .recording import Options, Recorder

FULL = {"teacher": "ResNet34", "student": "ResNet18", "batch": 512, "epochs": 2, "classes": 100,
        "val_images": 512, "run_seconds": 40}
DRY = {"teacher": "ResNet18", "student": "ResNet18", "batch": 4, "epochs": 2, "classes": 2,
       "train_images": 8, "copies": 1, "val_images": 4, "run_seconds": 5}
LOADER_WORKERS_NVJPEG = 8  # bytes and headers only: a few workers keep up


def settings(options: Options) -> dict:
    s = dict(DRY if options.dry_run else FULL)
    if not options.dry_run:
        s["train_images"], s["copies"] = options.imagenet_images, options.imagenet_copies
    workers = 1 if options.dry_run else options.cpu_count()
    s["workers"] = {"torch": workers, "nvjpeg": min(workers, LOADER_WORKERS_NVJPEG)}
    return s


def run_config(options: Options, s: dict, root: Path, loader: str) -> RunConfig:
    return imagenet_config(s["teacher"], s["student"], data_root=str(root), epochs=s["epochs"],
                           batch_size=s["batch"], eval_batch_size=s["batch"],
                           num_workers=s["workers"][loader], loader=loader,
                           device=options.device)


def decode_agreement(rec: Recorder, options: Options, root: Path, files: int = 32) -> None:
    """nvJPEG (or, in a dry run, the CPU decoder) against PIL on ordinary JPEGs, and each odd
    file handed to the device decoder directly: does it still need the PIL route?"""
    device = torch.device(options.device)
    train = load_imagefolder_dataset("imagenet", "train", root)
    originals = [p for p, _ in train.samples if "_copy" not in Path(p).stem]
    odd, plain = originals[:4], originals[4:4 + files]  # the first class starts with the odd
    payloads = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in plain]
    decoded = jpeg_decode.decode_rgb(payloads, [True] * len(payloads), device)
    diffs = [(d.cpu().int() - decode_with_pil(p.numpy().tobytes()).int()).abs()
             for d, p in zip(decoded, payloads, strict=True)]
    rec.row("imagenet.decode_max_diff", f"{device.type} decoder vs PIL, {len(plain)} JPEGs: max",
            max(float(d.max()) for d in diffs), "grey levels")
    rec.row("imagenet.decode_mean_diff", f"{device.type} decoder vs PIL: mean",
            float(np.mean([float(d.float().mean()) for d in diffs])), "grey levels")
    direct = {}
    for path in odd:
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        try:
            image = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            diff = (image.cpu().int() - decode_with_pil(data.numpy().tobytes()).int()).abs()
            direct[Path(path).name] = f"decodes, max diff {int(diff.max())}"
        except RuntimeError as error:
            direct[Path(path).name] = f"refused: {str(error).splitlines()[0][:80]}"
    refused = sum(v.startswith("refused") for v in direct.values())
    rec.row("imagenet.odd_files_direct", "odd files (CMYK, grey, PNG, progressive) given to the "
            "device decoder directly: refused", refused, f"of {len(odd)}", detail=direct)


def loader_alone(options: Options, s: dict, root: Path, kind: str) -> float:
    """Images/s of the loader alone over one epoch, its workers' start included."""
    train = load_imagefolder_dataset("imagenet", "train", root)
    extra = {"device": options.device} if kind == "nvjpeg" else {}
    loader = make_imagenet_loader(kind, train, s["batch"], True, 0,
                                  num_workers=s["workers"][kind], **extra)
    started, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += x.shape[0]
    if options.device == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def end_to_end(rec: Recorder, options: Options, s: dict, root: Path) -> dict:
    """The three engine runs; their images/s by name."""
    measured = not options.dry_run
    rates = {}
    # nvjpeg before torch: if time runs short, the figure never measured comes first
    runs = (("ceiling", "step alone on resident tensors (ceiling)", "torch", True),
            ("e2e_nvjpeg", f"end to end, nvjpeg loader, workers: {s['workers']['nvjpeg']}",
             "nvjpeg", False),
            ("e2e_torch", f"end to end, PIL DataLoader, workers: {s['workers']['torch']}",
             "torch", False))
    for name, label, loader, resident in runs:
        key = f"imagenet.{name}_img_s"
        is_target = name != "ceiling"
        target = targets.IMAGENET_TARGET if is_target else ""
        if options.left() < s["run_seconds"]:
            rec.skipped(key, label, "time guard", "img/s", target)
            continue
        record, trainer = train_once(run_config(options, s, root, loader), resident=resident)
        rates[name] = steady_images_per_s(record)
        detail = {"speed": record["speed"], "history_train_seconds":
                  [h["train_seconds"] for h in record["history"]]}
        if loader == "nvjpeg" and not resident:
            detail["decode_counts"] = dict(trainer.train_loader.decode_counts)
        verdict = (targets.imagenet_verdict(rates[name], rates.get("ceiling"), measured)
                   if is_target else "")
        if is_target and rates.get("ceiling"):
            label = f"{label} = {rates[name] / rates['ceiling']:.2f} x ceiling"
        rec.row(key, label, rates[name], "img/s", target, verdict, detail=detail)
    return rates


def run(rec: Recorder, options: Options) -> None:
    s = settings(options)
    root = options.work / "imagenet_folder"
    folder = make_imagefolder(root, s["train_images"], s["val_images"], s["classes"],
                              processes=1 if options.dry_run else None)
    entries = link_copies(root, s["copies"])
    rec.row("imagenet.generated_files", f"generated JPEGs ({folder['mean_kb']:.0f} KB mean, "
            f"{folder['seconds']:.1f} s), each listed {s['copies']}x: training entries",
            entries, "files", detail=folder)
    rec.note(f"ImageNet runs: {s['teacher']} -> {s['student']} CKD, batch {s['batch']}, "
             f"{s['epochs']} epochs of {entries} images, first excluded; workers {s['workers']}")
    rates = end_to_end(rec, options, s, root)
    if "e2e_torch" in rates and "e2e_nvjpeg" in rates:
        faster = "nvjpeg" if rates["e2e_nvjpeg"] > rates["e2e_torch"] else "torch"
        rec.row("imagenet.faster_loader", "faster image-folder loader end to end (for 'auto')",
                faster, "", verdict="" if not options.dry_run else targets.DRY)
    for kind in ("nvjpeg", "torch"):
        key, label = f"imagenet.loader_{kind}_img_s", f"{kind} loader alone (one epoch)"
        if options.left() < s["run_seconds"] / 2:
            rec.skipped(key, label, "time guard", "img/s")
            continue
        rec.row(key, label, loader_alone(options, s, root, kind), "img/s")
    decode_agreement(rec, options, root)
