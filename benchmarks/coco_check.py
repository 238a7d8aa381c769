"""GPU timing of one COCO training step: R101 -> R18 Faster R-CNN FPN, ReviewKD + CKD.

    python benchmarks/coco_check.py [--images-per-batch 4] [--warmup 10] [--timed 30]
                                    [--methods baseline DKD ReviewKD+CKD] [--out FILE]
    python benchmarks/coco_check.py --dry-run      # CPU, tiny sizes: checks the script itself

What it measures: the training step of ``ckd_lib.detection`` as the engine runs it (the
``DetectionDistiller`` forward with the teacher inside, backward, SGD step), on images generated
in memory at the recipe's sizes (shorter side drawn from 640..800, longer side at most 1333,
2..12 random boxes of the 80 COCO classes), so no dataset is needed. The teacher is an untrained
R101 Faster R-CNN FPN and the student a randomly initialised R18 one (81 classes): the arithmetic
is that of the real run, the numbers of boxes the RPN keeps are not quite (an untrained RPN's
proposals are random), and data loading (JPEG decoding) is not part of the step. The backbones
and FPNs run under bf16 autocast as in the engine (``DetectionDistiller(amp_dtype=...)``);
heads and losses in float32. The learning rate is the first warm-up value of the recipe, as in
a real run's first iterations, so random weights do not diverge while they are timed.

Every method runs on the same generated batches: ``baseline`` (the student alone), ``DKD`` and
``ReviewKD+CKD`` with their recipe's loss parameters, all at ``--images-per-batch`` images, so
the distillation overhead is the difference between rows. Per-phase times come from CUDA events
(no synchronisation inside an iteration, so they do not slow the total): forward (student and
teacher and every loss), backward, optimizer step. A global time guard (``--time-limit``) stops
timing early and skips what is left, so the script ends well inside a 10-minute device slot.

Prints a table and writes a JSON (default ``benchmarks/coco_<device>.json``; ``--dry-run`` writes
only where ``--out`` says).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ckd_lib.detection.config import DetectionConfig  # noqa: E402
from ckd_lib.detection.distill import DetectionDistiller  # noqa: E402
from ckd_lib.detection.engine import _parameter_groups  # noqa: E402
from ckd_lib.detection.models import (  # noqa: E402
    MAX_SIZE,
    TRAIN_MIN_SIZES,
    DetectorSpec,
    build_detector,
)
from ckd_lib.methods import get_method  # noqa: E402

METHODS = ("baseline", "DKD", "ReviewKD+CKD")
TEACHER, STUDENT = "R101", "R18"
NUM_CLASSES = 81  # the 80 COCO categories and the background
DRY_RUN_SIZES = (96, 128)
DRY_RUN_MAX_SIZE = 160
DRY_RUN_ROIS = 64
# Proposals sampled per image for the RoI heads (torchvision's and Detectron2's default).
ROIS_PER_IMAGE = 512
PHASES = ("forward", "backward", "optimizer")


def device_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia_h100_80gb_hbm3"`` (for file names)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "device"


def random_batch(generator: torch.Generator, images: int, min_sizes: tuple[int, ...],
                 max_size: int, num_classes: int = NUM_CLASSES, max_boxes: int = 12,
                 device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], list[dict]]:
    """``images`` random RGB images in [0, 1] with random boxes, as the detector takes them.

    Shorter side uniform in ``min(min_sizes)..max(min_sizes)``, aspect ratio uniform in 1..1.8
    (landscape or portrait at random) with the longer side capped at ``max_size``; 2..``max_boxes``
    boxes per image, each at least 1/16 of the shorter side wide and tall, labels 1..
    ``num_classes - 1``. The layout is drawn from ``generator`` (CPU); pixels are drawn on
    ``device``.
    """
    low, high = min(min_sizes), max(min_sizes)

    def uniform(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    out_images, targets = [], []
    for _ in range(images):
        short = int(torch.randint(low, high + 1, (), generator=generator))
        long = min(max_size, max(short, round(short * uniform(1.0, 1.8))))
        height, width = (short, long) if bool(torch.rand((), generator=generator) < 0.5) \
            else (long, short)
        count = int(torch.randint(2, max_boxes + 1, (), generator=generator))
        smallest = max(2.0, short / 16)
        boxes = []
        for _ in range(count):
            w = uniform(smallest, width / 2)
            h = uniform(smallest, height / 2)
            x0 = uniform(0.0, width - w)
            y0 = uniform(0.0, height - h)
            boxes.append([x0, y0, x0 + w, y0 + h])
        labels = torch.randint(1, num_classes, (count,), generator=generator)
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        pixels = torch.Generator(device=device).manual_seed(seed)
        out_images.append(torch.rand((3, height, width), generator=pixels, device=device))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                        "labels": labels.to(device)})
    return out_images, targets


class PhaseClock:
    """Marks between phases: CUDA events on a GPU (no synchronisation), wall time on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Seconds between consecutive marks (call after the last mark)."""
        pairs = zip(self.marks, self.marks[1:], strict=False)
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in pairs]
        return [b - a for a, b in pairs]


@dataclass
class MethodResult:
    method: str
    images_per_batch: int
    warmup_iterations: int
    timed_iterations: int = 0
    seconds: float = 0.0
    phase_seconds: dict = field(default_factory=dict)
    peak_memory_gib: float | None = None
    losses: dict = field(default_factory=dict)
    loss_params: dict = field(default_factory=dict)
    stopped_by_time_limit: bool = False
    build_seconds: float = 0.0

    @property
    def iterations_per_s(self) -> float | None:
        return self.timed_iterations / self.seconds if self.seconds > 0 else None

    @property
    def images_per_s(self) -> float | None:
        rate = self.iterations_per_s
        return None if rate is None else rate * self.images_per_batch

    def to_dict(self) -> dict:
        return {"method": self.method, "images_per_batch": self.images_per_batch,
                "warmup_iterations": self.warmup_iterations,
                "timed_iterations": self.timed_iterations, "seconds": self.seconds,
                "iterations_per_s": self.iterations_per_s, "images_per_s": self.images_per_s,
                "phase_seconds_per_iteration": self.phase_seconds,
                "peak_memory_gib": self.peak_memory_gib, "last_losses": self.losses,
                "loss_params": self.loss_params, "build_seconds": self.build_seconds,
                "stopped_by_time_limit": self.stopped_by_time_limit}


def recipe_config(method: str) -> DetectionConfig:
    """The recipe row of ``method`` for R101 -> R18 (the student's own row for baseline)."""
    teacher = None if method == "baseline" else TEACHER
    return DetectionConfig.from_recipe(teacher, STUDENT, method, data_root="unused")


def time_method(method: str, args: argparse.Namespace, device: torch.device,
                batches: list, deadline: float) -> MethodResult:
    """Warm up, then time ``args.timed`` training steps of ``method`` (fewer past ``deadline``)."""
    config = recipe_config(method)
    result = MethodResult(method, args.images_per_batch, args.warmup,
                          loss_params=dict(config.loss))
    started = time.perf_counter()
    spec = DetectorSpec(config.student, num_classes=NUM_CLASSES,
                        train_min_sizes=args.train_min_sizes, test_min_size=max(
                            args.train_min_sizes), max_size=args.max_size,
                        roi_batch_per_image=args.rois_per_image)
    torch.manual_seed(0)
    student = build_detector(spec)
    teacher = None
    if get_method(method, "detection").terms:
        teacher = build_detector(spec.replace(backbone=config.teacher))
    distiller = DetectionDistiller(student, teacher, method, config.loss,
                                   amp_dtype=torch.bfloat16 if args.amp == "bf16" else None
                                   ).to(device)
    # The first warm-up lr of the recipe (a real run's first iterations).
    optimizer = torch.optim.SGD(_parameter_groups(distiller, config.weight_decay),
                                lr=config.lr * config.warmup_factor, momentum=config.momentum)
    distiller.train()
    result.build_seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)

    def step(index: int, clock: PhaseClock | None) -> dict:
        images, targets = batches[index % len(batches)]
        if clock:
            clock.mark()
        losses = distiller(images, targets)
        total = sum(losses.values())
        if clock:
            clock.mark()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clock:
            clock.mark()
        optimizer.step()
        if clock:
            clock.mark()
        return losses

    for i in range(args.warmup):
        step(i, None)
        if time.perf_counter() > deadline:
            result.stopped_by_time_limit = True
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    clocks: list[PhaseClock] = []
    losses: dict = {}
    t0 = time.perf_counter()
    for i in range(args.timed):
        if result.stopped_by_time_limit:
            break
        clock = PhaseClock(device)
        losses = step(args.warmup + i, clock)
        clocks.append(clock)
        if time.perf_counter() > deadline and i + 1 < args.timed:
            result.stopped_by_time_limit = True
    if device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - t0 if clocks else 0.0
    result.timed_iterations = len(clocks)
    if clocks:
        per_phase = [clock.seconds() for clock in clocks]
        result.phase_seconds = {name: sum(row[k] for row in per_phase) / len(per_phase)
                                for k, name in enumerate(PHASES)}
        result.losses = {k: float(v.detach()) for k, v in losses.items()}
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def format_table(rows: list[MethodResult]) -> str:
    def number(value, digits=2):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.{digits}f}"

    base = next((r for r in rows if r.method == "baseline" and r.iterations_per_s), None)
    header = (f"{'method':14s} {'it/s':>7s} {'img/s':>7s} {'vs base':>8s} {'peak GiB':>9s} "
              f"{'fwd ms':>8s} {'bwd ms':>8s} {'opt ms':>8s} {'timed':>6s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = (base.iterations_per_s / r.iterations_per_s
                 if base and r.iterations_per_s else None)
        ms = {k: (v * 1000 if v is not None else None) for k, v in r.phase_seconds.items()}
        lines.append(
            f"{r.method:14s} {number(r.iterations_per_s):>7s} {number(r.images_per_s):>7s} "
            f"{(number(ratio) + 'x') if ratio else '-':>8s} {number(r.peak_memory_gib):>9s} "
            f"{number(ms.get('forward'), 1):>8s} {number(ms.get('backward'), 1):>8s} "
            f"{number(ms.get('optimizer'), 1):>8s} "
            f"{r.timed_iterations:>5d}{'*' if r.stopped_by_time_limit else ' '}")
    if any(r.stopped_by_time_limit for r in rows):
        lines.append("* stopped early by --time-limit")
    lines.append("vs base: seconds per iteration relative to baseline (the student alone)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/coco_check.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images-per-batch", type=int, default=None,
                        help="images per step (default: the ReviewKD+CKD recipe's 4; 1 with "
                             "--dry-run)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10)")
    parser.add_argument("--timed", type=int, default=None, help="timed steps (default 30)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--amp", choices=("bf16", "off"), default=None,
                        help="backbone autocast (default bf16 on a GPU, off with --dry-run)")
    parser.add_argument("--time-limit", type=float, default=420.0,
                        help="seconds after which timing stops and what is left is skipped")
    parser.add_argument("--batches", type=int, default=None,
                        help="distinct generated batches, cycled through (default 8; 1 with "
                             "--dry-run, whose CPU kernels are rebuilt for every new shape)")
    parser.add_argument("--rois-per-image", type=int, default=None,
                        help=f"sampled proposals per image in the RoI heads (default "
                             f"{ROIS_PER_IMAGE} as in the recipe; {DRY_RUN_ROIS} with --dry-run)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--out", default=None, help="JSON file (default "
                        "benchmarks/coco_<device>.json; none with --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU (one thread), sizes (96, 128) max 160, 1 image and 64 RoIs "
                             "per step, 1 warm-up and 2 timed steps")
    args = parser.parse_args(argv)
    dry = args.dry_run
    defaults = {"images_per_batch": 1 if dry else recipe_config("ReviewKD+CKD").images_per_batch,
                "warmup": 1 if dry else 10, "timed": 2 if dry else 30,
                "amp": "off" if dry else "bf16", "device": "cpu" if dry else "cuda",
                "rois_per_image": DRY_RUN_ROIS if dry else ROIS_PER_IMAGE,
                "batches": 1 if dry else 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.train_min_sizes = DRY_RUN_SIZES if dry else TRAIN_MIN_SIZES
    args.max_size = DRY_RUN_MAX_SIZE if dry else MAX_SIZE
    for name in ("images_per_batch", "timed", "batches", "rois_per_image"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.amp == "bf16" and not args.device.startswith("cuda"):
        parser.error("--amp bf16 is for CUDA devices (the engine uses it only there)")
    return args


def output_path(args: argparse.Namespace, device_name: str) -> Path | None:
    if args.out:
        return Path(args.out)
    if args.dry_run:
        return None
    return Path(__file__).resolve().parent / f"coco_{device_slug(device_name)}.json"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.dry_run:
        # One CPU thread: a check of the script, not of speed, and on a busy machine several
        # OpenMP threads that wait for each other are ten times slower than one.
        torch.set_num_threads(1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict:
    deadline = time.perf_counter() + args.time_limit
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --dry-run to check the script on the CPU")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(generator, args.images_per_batch, args.train_min_sizes,
                            args.max_size, device=device)
               for _ in range(min(args.batches, args.warmup + args.timed))]
    # The batches stay on the device for the whole run, so every peak memory includes them.
    pool_gib = sum(t.numel() * t.element_size() for images, targets in batches
                   for t in [*images, *(v for d in targets for v in d.values())]) / 2**30
    rows: list[MethodResult] = []
    skipped: list[str] = []
    for method in args.methods:
        if time.perf_counter() > deadline:
            skipped.append(method)
            continue
        rows.append(time_method(method, args, device, batches, deadline))
        if device.type == "cuda":
            torch.cuda.empty_cache()  # this method's models are gone
        print(f"{method}: {rows[-1].timed_iterations} timed iterations in "
              f"{rows[-1].seconds:.2f} s", flush=True)
    table = format_table(rows)
    print(f"\nR101 -> R18 Faster R-CNN FPN on {device_name}, {args.images_per_batch} images per "
          f"step, sizes {min(args.train_min_sizes)}..{max(args.train_min_sizes)} (max "
          f"{args.max_size}), amp {args.amp}")
    print(table)
    print(f"peak memory includes the {len(batches)} generated batches ({pool_gib:.2f} GiB)")
    if skipped:
        print(f"skipped by --time-limit: {', '.join(skipped)}")
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
        "cuda": torch.version.cuda, "device": device_name, "dry_run": args.dry_run,
        "teacher": TEACHER, "student": STUDENT, "kind": "faster_rcnn",
        "num_classes": NUM_CLASSES, "images_per_batch": args.images_per_batch,
        "train_min_sizes": list(args.train_min_sizes), "max_size": args.max_size,
        "amp": args.amp, "rois_per_image": args.rois_per_image, "warmup": args.warmup,
        "timed": args.timed,
        "time_limit_s": args.time_limit, "skipped": skipped,
        "batches": len(batches), "batch_pool_gib": pool_gib,
        "methods": {r.method: r.to_dict() for r in rows},
    }
    path = output_path(args, device_name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
