"""Section (d): COCO R101 -> R18 Faster R-CNN FPN training iterations, by method, with memory.

What it times: the training step of ``ckd_lib.detection`` as its engine runs it (the
``DetectionDistiller`` forward with the teacher inside, backward, SGD step) for the student
alone, DKD and ReviewKD+CKD, each with its recipe's loss parameters, all on the same generated
batches at the recipe's 4 images per step, so the distillation overhead is the difference
between rows. Images are generated in memory at the recipe's sizes (shorter side 640..800,
longer at most 1333, 2..12 random boxes of the 80 classes): no dataset, and no JPEG decoding in
the step. The teacher is an untrained R101 and the student a random R18 (81 classes): the
arithmetic of the real run; an untrained RPN keeps other proposals than a trained one, which
the fixed 512 sampled RoIs per image make irrelevant to the RoI heads' cost. Backbones and FPNs
run under bf16 autocast as in the engine; heads and losses in float32; the learning rate is the
recipe's first warm-up value, so random weights do not diverge while they are timed.

Per-phase times come from CUDA events (no synchronisation inside an iteration). Peak memory is
``torch.cuda.max_memory_allocated`` and includes the generated batches. (Absorbed from the
former ``benchmarks/coco_check.py``, which never ran on a GPU.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.distill import DetectionDistiller
from ckd_lib.detection.engine import _parameter_groups
from ckd_lib.detection.models import MAX_SIZE, TRAIN_MIN_SIZES, DetectorSpec, build_detector
from ckd_lib.methods import get_method

from . import targets
from .recording import Options, Recorder

METHODS = ("baseline", "DKD", "ReviewKD+CKD")
LABELS = {"baseline": "student alone", "DKD": "DKD", "ReviewKD+CKD": "ReviewKD+CKD"}
TEACHER, STUDENT = "R101", "R18"
NUM_CLASSES = 81  # the 80 COCO categories and the background
PHASES = ("forward", "backward", "optimizer")
FULL = {"images": 4, "warmup": 5, "timed": 20, "batches": 8, "rois": 512,
        "sizes": TRAIN_MIN_SIZES, "max_size": MAX_SIZE, "amp": torch.bfloat16,
        "method_seconds": 25}
DRY = {"images": 1, "warmup": 1, "timed": 2, "batches": 1, "rois": 64, "sizes": (96, 128),
       "max_size": 160, "amp": None, "method_seconds": 3}


def random_batch(generator: torch.Generator, images: int, min_sizes: tuple[int, ...],
                 max_size: int, num_classes: int = NUM_CLASSES, max_boxes: int = 12,
                 device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], list[dict]]:
    """``images`` random RGB images in [0, 1] with random boxes, as the detector takes them.

    Shorter side uniform in ``min(min_sizes)..max(min_sizes)``, aspect ratio uniform in 1..1.8
    (landscape or portrait at random) with the longer side capped at ``max_size``; 2..
    ``max_boxes`` boxes per image, each at least 1/16 of the shorter side wide and tall, labels
    1..``num_classes - 1``. The layout is drawn from ``generator`` (CPU); pixels on ``device``.
    """
    low, high = min(min_sizes), max(min_sizes)

    def uniform(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    out_images, out_targets = [], []
    for _ in range(images):
        short = int(torch.randint(low, high + 1, (), generator=generator))
        long = min(max_size, max(short, round(short * uniform(1.0, 1.8))))
        landscape = bool(torch.rand((), generator=generator) < 0.5)
        height, width = (short, long) if landscape else (long, short)
        count = int(torch.randint(2, max_boxes + 1, (), generator=generator))
        smallest = max(2.0, short / 16)
        boxes = []
        for _ in range(count):
            w, h = uniform(smallest, width / 2), uniform(smallest, height / 2)
            x0, y0 = uniform(0.0, width - w), uniform(0.0, height - h)
            boxes.append([x0, y0, x0 + w, y0 + h])
        labels = torch.randint(1, num_classes, (count,), generator=generator)
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        pixels = torch.Generator(device=device).manual_seed(seed)
        out_images.append(torch.rand((3, height, width), generator=pixels, device=device))
        out_targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                            "labels": labels.to(device)})
    return out_images, out_targets


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
class MethodTiming:
    method: str
    timed: int = 0
    seconds: float = 0.0
    phase_seconds: dict = field(default_factory=dict)
    peak_memory_gib: float | None = None
    losses: dict = field(default_factory=dict)
    loss_params: dict = field(default_factory=dict)
    build_seconds: float = 0.0
    stopped_by_time_guard: bool = False

    @property
    def seconds_per_iteration(self) -> float | None:
        return self.seconds / self.timed if self.timed else None


def recipe_config(method: str) -> DetectionConfig:
    """The recipe row of ``method`` for R101 -> R18 (the student's own row for baseline)."""
    teacher = None if method == "baseline" else TEACHER
    return DetectionConfig.from_recipe(teacher, STUDENT, method, data_root="unused")


def time_method(method: str, s: dict, device: torch.device, batches: list,
                deadline: float) -> MethodTiming:
    """Warm up, then time ``s["timed"]`` training steps of ``method`` (fewer past ``deadline``,
    a ``time.monotonic()`` value)."""
    config = recipe_config(method)
    result = MethodTiming(method, loss_params=dict(config.loss))
    started = time.perf_counter()
    spec = DetectorSpec(config.student, num_classes=NUM_CLASSES, train_min_sizes=s["sizes"],
                        test_min_size=max(s["sizes"]), max_size=s["max_size"],
                        roi_batch_per_image=s["rois"])
    torch.manual_seed(0)
    student = build_detector(spec)
    distils = bool(get_method(method, "detection").terms)
    teacher = build_detector(spec.replace(backbone=config.teacher)) if distils else None
    distiller = DetectionDistiller(student, teacher, method, config.loss,
                                   amp_dtype=s["amp"]).to(device)
    optimizer = torch.optim.SGD(_parameter_groups(distiller, config.weight_decay),
                                lr=config.lr * config.warmup_factor, momentum=config.momentum)
    distiller.train()
    result.build_seconds = time.perf_counter() - started
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)

    def step(index: int, clock: PhaseClock | None) -> dict:
        images, batch_targets = batches[index % len(batches)]
        marks = clock.mark if clock else (lambda: None)
        marks()
        losses = distiller(images, batch_targets)
        total = sum(losses.values())
        marks()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        marks()
        optimizer.step()
        marks()
        return losses

    for i in range(s["warmup"]):
        step(i, None)
        if time.monotonic() > deadline:
            result.stopped_by_time_guard = True
            break
    if cuda:
        torch.cuda.synchronize()
    clocks, losses = [], {}
    t0 = time.perf_counter()
    for i in range(s["timed"]):
        if result.stopped_by_time_guard:
            break
        clock = PhaseClock(device)
        losses = step(s["warmup"] + i, clock)
        clocks.append(clock)
        if time.monotonic() > deadline and i + 1 < s["timed"]:
            result.stopped_by_time_guard = True
    if cuda:
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - t0 if clocks else 0.0
    result.timed = len(clocks)
    if clocks:
        rows = [clock.seconds() for clock in clocks]
        result.phase_seconds = {name: sum(r[k] for r in rows) / len(rows)
                                for k, name in enumerate(PHASES)}
        result.losses = {k: float(v.detach()) for k, v in losses.items()}
    if cuda:
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def run(rec: Recorder, options: Options) -> None:
    s = DRY if options.dry_run else FULL
    measured = not options.dry_run
    device = torch.device(options.device)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(generator, s["images"], s["sizes"], s["max_size"], device=device)
               for _ in range(min(s["batches"], s["warmup"] + s["timed"]))]
    rec.note(f"COCO: {TEACHER} -> {STUDENT} Faster R-CNN FPN, {s['images']} images per step, "
             f"sizes {min(s['sizes'])}..{max(s['sizes'])} (max {s['max_size']}), "
             f"{s['rois']} RoIs per image, {s['warmup']} warm-up and {s['timed']} timed steps")
    timings: dict[str, MethodTiming] = {}
    for method in METHODS:
        key, label = f"coco.{method}_s_per_it", f"{LABELS[method]}: time per iteration"
        if options.left() < s["method_seconds"]:
            target = targets.COCO_TARGET if method == "ReviewKD+CKD" else ""
            rec.skipped(key, label, "time guard", "s/it", target)
            continue
        # stop timing this method early rather than leave nothing for the next ones
        share = options.left() / (len(METHODS) - len(timings))
        timing = time_method(method, s, device, batches, time.monotonic() + share)
        timings[method] = timing
        detail = {**timing.__dict__, "seconds_per_iteration": timing.seconds_per_iteration}
        if method == "ReviewKD+CKD":
            base = timings["baseline"].seconds_per_iteration if "baseline" in timings else None
            mine = timing.seconds_per_iteration
            ratio = mine / base if base and mine else None
            label = f"{label} = {ratio:.2f} x student alone" if ratio else label
            rec.row(key, label, mine, "s/it", targets.COCO_TARGET,
                    targets.coco_verdict(ratio, measured), detail={**detail, "ratio": ratio})
        else:
            rec.row(key, label, timing.seconds_per_iteration, "s/it", detail=detail)
        rec.row(f"coco.{method}_peak_gib", f"{LABELS[method]}: peak memory",
                timing.peak_memory_gib, "GiB")
        if device.type == "cuda":
            torch.cuda.empty_cache()  # this method's models are gone
