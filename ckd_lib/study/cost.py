"""The cost plan (``--plan``): runs, epochs or iterations, and GPU-hours, before any submission.

GPU-hours come only from measurements committed in ``benchmarks/`` (``benchmarks/RESULTS.md``
describes them), read from their JSON files:

- ``bench_h200_run2.json`` (``python -m ckd_lib.bench``): resnet32x4 -> resnet8x4 at batch 64 on
  CIFAR-100-sized data, the engine's fast path, with 1 and with 3 students sharing the teacher,
  training and evaluation seconds per epoch (run 2: the engine as it is, each student of a group
  on its own CUDA stream; run 1 predates that);
- ``imagenet_h200.json``: ResNet34 -> ResNet18 at batch 512, the engine end to end with the PIL
  DataLoader (images per second, training only), one student.

A job (a unit of the plan: a group of students sharing a teacher, or one detection run) has a
measured cost only when its dataset, teacher, students and batch size are those of a
measurement and its methods are logit losses (the measurement is CKD's step; KD and DKD differ
from it only in the loss; feature methods such as ReviewKD, students without a teacher, other
pairs and batch sizes are not measured). Its GPU-hours: epochs x (training images x the measured
seconds per image + the measured evaluation seconds per epoch), for k students sharing the
teacher between the measured 1- and 3-student figures (straight line; more students than were
measured: not measured); the image rate is
per GPU, so a job on N GPUs is assumed to scale linearly (N times faster, the same GPU-hours).
Everything else is counted (runs, epochs, iterations) and marked as not measured: no figure is
made up for it.

Rehearsals (``--rehearse``, :mod:`ckd_lib.study.rehearse`) measure every job of a profile:
``benchmarks/rehearse-<profile>-<device>.json`` holds, per job, its time per step on the device
that ran it, with the batch it ran and the batch of the real job it stands for. A real job whose
task, dataset, teacher, students with their methods and batch are a rehearsed job's costs
epochs x (ceil(training images / batch) steps x the step time + the students' evaluation of the
test set at the measured seconds per image), x the number of GPUs for a distributed GPU job (the
step time is per job; it is assumed to scale linearly). A CPU rehearsal ran a smaller batch: its
step time is scaled to the real batch in proportion (linear in images, as the CPU is). CPU
measurements are never GPU estimates: ``--plan`` shows them in a column of their own, "CPU-h",
hours of the CPU that ran the rehearsal, and the GPU column uses GPU measurements only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib.data.catalog import dataset_base, split_sizes
from ckd_lib.study.paths import project_root
from ckd_lib.study.planning import Plan, Unit

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1K's training set (benchmarks/RESULTS.md)
IMAGENET_VAL_IMAGES = 50_000
COCO_VAL_IMAGES = 5_000
KINDS = {"gpu": "cuda", "cpu": "cpu"}
MARK = "n/m"  # no measurement


@dataclass(frozen=True)
class Rate:
    """A measured training speed of one pair at one batch size on one card."""

    source: str
    card: str
    dataset: str
    teacher: str
    student: str
    batch_size: int
    train_seconds_per_image: dict  # students sharing the teacher -> seconds per image
    eval_seconds_per_epoch: dict = field(default_factory=dict)

    def describe(self) -> str:
        students = "/".join(str(k) for k in sorted(self.train_seconds_per_image))
        what = "training + evaluation" if self.eval_seconds_per_epoch else "training only"
        return (f"{self.card}: {self.dataset} {self.teacher}->{self.student}, batch "
                f"{self.batch_size}, {students} student(s), {what} (benchmarks/{self.source})")

    def per_image(self, students: int) -> float | None:
        """Seconds per training image for ``students`` students (measured, or between two
        measured numbers of students)."""
        return _on_line(self.train_seconds_per_image, students)

    def eval_per_epoch(self, students: int) -> float:
        return _on_line(self.eval_seconds_per_epoch, students) or 0.0


def _on_line(points: dict, k: int) -> float | None:
    """Measured at ``k``, or between two measured points (never beyond them)."""
    if k in points:
        return points[k]
    below = [p for p in points if p < k]
    above = [p for p in points if p > k]
    if not below or not above:
        return None
    a, b = max(below), min(above)
    return points[a] + (k - a) * (points[b] - points[a]) / (b - a)


@dataclass(frozen=True)
class StepRate:
    """A rehearsed job's measured time per step (``benchmarks/rehearse-*.json``)."""

    source: str
    profile: str
    device: str
    device_type: str  # "cuda" or "cpu"
    date: str
    commit: str
    key: str  # ckd_lib.study.rehearse.unit_key of the real job it stands for
    seconds_per_step: float  # device-seconds (GPU-seconds: x the job's GPUs) at `batch`
    batch: int
    stands_for_batch: int
    eval_seconds_per_image: float
    load: str = ""  # the machine's load average while the rehearsal ran

    def describe(self) -> str:
        scaled = ", its batches scaled to the recipes' in proportion" \
            if self.batch != self.stands_for_batch else ""
        return (f"{self.device} ({self.device_type}): the rehearsal of profile {self.profile}, "
                f"{self.date[:10]}, commit {(self.commit or '?')[:10]}{scaled}{self.load} "
                f"(benchmarks/{self.source})")

    def seconds(self, unit: Unit) -> float:
        """Device-seconds of the real ``unit`` at this rate (see the module docstring)."""
        first = unit.configs[0]
        per_step = self.seconds_per_step * self.stands_for_batch / self.batch
        if unit.task == "detection":
            val = first.get("val_limit") or COCO_VAL_IMAGES
            return first["iterations"] * per_step + val * self.eval_seconds_per_image
        base = dataset_base(first["dataset"])
        sizes = (IMAGENET_TRAIN_IMAGES, IMAGENET_VAL_IMAGES) if base == "imagenet" else \
            split_sizes(base) or (0, 0)
        images = first.get("train_subset") or sizes[0]
        test = first.get("test_subset") or sizes[1]
        steps = math.ceil(images / first["batch_size"])
        evaluation = len(unit.configs) * test * self.eval_seconds_per_image
        return first["epochs"] * (steps * per_step + evaluation)


def rehearsal_rates(folder: Path | None = None, kind: str = "gpu") -> list[StepRate]:
    """The step times of the rehearsals in ``folder`` (benchmarks/, or $CKD_BENCHMARKS_DIR
    where a rehearsal was told to write them) measured on ``kind`` ("gpu"/"cpu")."""
    from ckd_lib.study.rehearse import benchmarks_dir

    folder = folder or benchmarks_dir()
    rates = []
    for path in sorted(folder.glob("rehearse-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("what") != "rehearsal" or data.get("device_type") != KINDS[kind]:
            continue
        loads = [v[0] for v in (data.get("load_average") or {}).values() if v]
        load = f", load average {' -> '.join(f'{x:.1f}' for x in loads)}" if loads else ""
        for unit in data.get("units", []):
            if unit.get("device_seconds_per_step") is None:
                continue
            rates.append(StepRate(path.name, data["profile"], data["device"],
                                  data["device_type"], data.get("date", ""),
                                  data.get("commit") or "", unit["key"],
                                  unit["device_seconds_per_step"], int(unit["batch"]),
                                  int(unit["stands_for_batch"]),
                                  float(unit.get("eval_seconds_per_image") or 0.0), load))
    return rates


def measured_rates(folder: Path | None = None, kind: str = "gpu") -> list:
    """The rates of the committed benchmark files (those present) measured on ``kind``: the
    GPU benchmarks and GPU rehearsals ("gpu"), or CPU rehearsals ("cpu")."""
    if kind == "cpu":
        return rehearsal_rates(folder, "cpu")
    rates: list = rehearsal_rates(folder, "gpu")
    folder = folder or project_root() / "benchmarks"
    cifar = folder / "bench_h200_run2.json"
    if cifar.is_file():
        data = json.loads(cifar.read_text())
        images = split_sizes(data["dataset"])[0]
        train, evaluation = {}, {}
        for name in ("fast path (defaults)", "fast path, 3 students"):
            row = data["rows"].get(name)
            if row:
                k = int(row.get("students", 1))
                train[k] = row["train_s_per_epoch"] / images
                evaluation[k] = row["eval_s_per_epoch"]
        # the pair and method are ckd_lib.bench's (not written in its JSON)
        rates.append(Rate(cifar.name, data["environment"]["device_name"], "cifar100",
                          "resnet32x4", "resnet8x4", int(data["batch_size"]), train, evaluation))
    imagenet = folder / "imagenet_h200.json"
    if imagenet.is_file():
        data = json.loads(imagenet.read_text())
        # the pair is the ImageNet check's (benchmarks/RESULTS.md), not written in its JSON
        rates.append(Rate(imagenet.name, data["device"], "imagenet", "ResNet34", "ResNet18",
                          int(data["batch"]), {1: 1.0 / data["engine_images_per_s"]}))
    return rates


def _logit_only(method: str) -> bool:
    from ckd_lib.methods import get_method

    spec = get_method(method)
    return spec.needs_teacher and not spec.needs_features


def unit_hours(unit: Unit, rates: list) -> tuple[float | None, Rate | StepRate | None]:
    """Device-hours of a unit from a matching measurement, or (None, None): a rehearsal's step
    time of the same job first, else a pair benchmark."""
    steps = [r for r in rates if isinstance(r, StepRate)]
    if steps:
        from ckd_lib.study.rehearse import key_of_configs

        key = key_of_configs(unit.task, unit.configs)
        for rate in steps:
            if rate.key == key:
                return rate.seconds(unit) / 3600, rate
    rates = [r for r in rates if isinstance(r, Rate)]
    if unit.task != "classification":
        return None, None
    first = unit.configs[0]
    base = dataset_base(first["dataset"])
    students = {c["student"] for c in unit.configs}
    for rate in rates:
        if (base == rate.dataset and first["teacher"] == rate.teacher
                and students == {rate.student} and first["batch_size"] == rate.batch_size
                and all(_logit_only(c["method"]) for c in unit.configs)):
            k = len(unit.configs)
            per_image = rate.per_image(k)
            if per_image is None:
                return None, None
            images = first.get("train_subset") or (
                IMAGENET_TRAIN_IMAGES if base == "imagenet" else split_sizes(base)[0])
            seconds = first["epochs"] * (images * per_image + rate.eval_per_epoch(k))
            return seconds / 3600, rate
    return None, None


@dataclass
class Row:
    name: str
    runs: int = 0
    jobs: int = 0
    epochs: int = 0
    iterations: int = 0
    hours: float = 0.0
    unmeasured_runs: int = 0
    unmeasured_jobs: int = 0

    def add(self, unit: Unit, hours: float | None) -> None:
        self.runs += len(unit.runs)
        self.jobs += 1
        for config in unit.configs:
            if unit.task == "detection":
                self.iterations += int(config["iterations"])
            else:
                self.epochs += int(config["epochs"])
        if hours is None:
            self.unmeasured_runs += len(unit.runs)
            self.unmeasured_jobs += 1
        else:
            self.hours += hours


def cost_table(plan: Plan, rates: list[Rate]) -> tuple[list[Row], Row, list[Rate]]:
    """One row per notebook, the total, and the measurements used."""
    rows: dict[str, Row] = {}
    total = Row("total")
    used: list[Rate] = []
    for unit in plan.units:
        hours, rate = unit_hours(unit, rates)
        if rate is not None and rate not in used:
            used.append(rate)
        rows.setdefault(unit.notebook, Row(unit.notebook)).add(unit, hours)
        total.add(unit, hours)
    return list(rows.values()), total, used


def _measured(row: Row) -> str:
    return f"{row.hours:,.1f}" if row.jobs > row.unmeasured_jobs else MARK


def _sources(rates: list) -> list[str]:
    """One line per benchmark file (a rehearsal's jobs share one)."""
    return list(dict.fromkeys(f"  measured on {rate.describe()}" for rate in rates))


def format_cost(plan: Plan, rates: list | None = None, cpu_rates: list | None = None) -> str:
    rates = measured_rates() if rates is None else rates
    cpu_rates = measured_rates(kind="cpu") if cpu_rates is None else cpu_rates
    rows, total, used = cost_table(plan, rates)
    cpu_rows, cpu_total, cpu_used = cost_table(plan, cpu_rates)
    cpu = {row.name: row for row in cpu_rows + [cpu_total]} if cpu_used else {}
    head = (f"{'notebook':<20} {'runs':>6} {'jobs':>6} {'epochs':>9} {'iterations':>11} "
            f"{'GPU-h (measured part)':>22}  " + (f"{'CPU-h':>11}  " if cpu else "")
            + "not measured")
    lines = [f"Cost plan of profile {plan.profile}: {total.runs} run(s) in {total.jobs} job(s)",
             "", head, "-" * len(head)]
    for row in rows + [total]:
        if row is total:
            lines.append("-" * len(head))
        missing = (f"{MARK}: {row.unmeasured_runs} run(s) in {row.unmeasured_jobs} job(s)"
                   if row.unmeasured_jobs else "-")
        extra = f"{_measured(cpu[row.name]):>11}  " if cpu else ""
        lines.append(f"{row.name:<20} {row.runs:>6} {row.jobs:>6} {row.epochs:>9,} "
                     f"{row.iterations:>11,} {_measured(row):>22}  {extra}{missing}")
    lines.append("")
    lines.append("epochs and iterations: summed over runs (students of a job share one data "
                 "stream). GPU-hours only where a measurement matches (ckd_lib/study/cost.py):")
    lines.extend(_sources(used or [r for r in rates if isinstance(r, Rate)]))
    if not rates:
        lines.append("  no measurement found in benchmarks/")
    if total.unmeasured_jobs:
        lines.append(f"{MARK} = no measurement of that pair, batch size or method on any card: "
                     f"{total.unmeasured_runs} of {total.runs} run(s) are not in the GPU-hours; "
                     "measure them (python -m ckd_lib.bench for CIFAR pairs, "
                     "benchmarks/device_check.py for ImageNet and COCO, or a rehearsal on a "
                     "GPU: --rehearse) before relying on a total.")
    if cpu:
        timed = cpu_total.runs - cpu_total.unmeasured_runs
        lines.append(f"CPU-h: hours of the CPU of a rehearsal, for {timed} of {cpu_total.runs} "
                     "run(s), NOT a GPU estimate "
                     "(the step times of a CPU rehearsal, scaled to the recipes' batches):")
        lines.extend(_sources(cpu_used))
    return "\n".join(lines)
