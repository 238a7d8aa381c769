"""Rehearsals: every run a profile plans, a few steps each, on generated data of the real shapes.

Why: the paper's profiles train for GPU-days, and a path that only their full breadth reaches (a
connector of one pair, a recipe row, a report table with eleven pairs, a job array of 198 units)
would otherwise fail hours into a GPU budget. ``python -m ckd_lib.study --profile NAME
--rehearse`` runs the profile's own notebooks, recipes, models, job graph and report, with only
what costs time made small, and measures every job's time per step on the way.

What a rehearsal changes, derived here from the profile (never a hand-written copy that drifts):

- data: CIFAR-like datasets become generated ``synthetic:`` data of the same shape (32x32, the
  dataset's classes); ImageNet a generated JPEG folder of 1000 classes read at 224-pixel crops;
  COCO generated images of 480-640 pixels (resized to the detector's real 640-800 input) in the
  80 COCO categories. Places365 cannot be generated (torchvision checks its list files' md5).
- schedules: epochs and milestones scaled so that the shortest recipe of the dataset is one
  epoch (240 -> 1, 480 -> 2; ImageNet 100 -> 1, 200 -> 2), warm-ups with them; detection
  iterations so that the longest recipe is 2 (360k -> 2, 180k -> 1). A profile whose schedules
  are already that short keeps them (its runs stay distinct).
- batches: the recipe's on a GPU; on a CPU divided by :data:`CPU_BATCH_DIVISOR` (a multiple of
  the processes, at least 2), CKD's chunk sizes and the learning rate with them (the linear
  scaling rule: a few steps at the recipe's lr with an eighth of its batch sent the logits of
  the paper rehearsal's students to cross-entropies of 30-40); each record says which ran.
- torch.distributed: a job the profile runs on N processes runs on min(N, GPUs) processes, on a
  CPU on :data:`CPU_PROCESSES` gloo processes.
- what needs a download: torchvision's ImageNet teachers and COCO R50 teacher become untrained
  teachers, ImageNet-pretrained detector backbones none (a rehearsal never downloads).
- the timing notebook (50) times 2 steps after 1 of warm-up; the t-SNE takes the test set.

Everything else is the profile's: pairs, methods, seeds, ablation rows, teachers first, students
sharing a teacher, the notebooks and the report. Each config's ``rehearsal`` field says what the
run stands for (:mod:`ckd_lib.rehearsal`), so rehearsal runs have their own ids, their own tree
(``results/rehearse-NAME/``), a banner on every page, and never teach a real run.

A rehearsal ends by writing ``benchmarks/rehearse-NAME-DEVICE.json``: per job, the time per step
with the device, the batch it ran and the batch it stands for, which ``--plan`` turns into
device-hours (:mod:`ckd_lib.study.cost`).

The rehearsal in force is the one of the notebook's profile: :func:`ckd_lib.study.parameters`
activates it (or none) in every notebook, and the functions that build configs
(``Settings.config``, ``torchrun.folder_configs``, ``coco``'s) ask :func:`active`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ckd_lib import results
from ckd_lib.errors import UserError
from ckd_lib.study.profiles import REHEARSAL_PREFIX as PREFIX

CPU_BATCH_DIVISOR = 8
CPU_PROCESSES = 2
GPU_STEPS = 4  # steps per epoch of the largest batch on a GPU (1 on a CPU): warm step times
MAX_KEPT_EPOCHS = 3  # a profile whose shortest recipe has at most this many epochs keeps them
REHEARSAL_ITERATIONS = 2  # of the longest detection recipe
TEST_IMAGES = 100  # generated CIFAR-like test images (at least one per class)
FOLDER_TEST_IMAGES = 32  # validation images of an ImageNet rehearsal
COCO_IMAGES = {"train": 4, "val": 2, "min_size": 480, "max_size": 640}
BENCHMARKS_ENV = "CKD_BENCHMARKS_DIR"
FORMAT = 1


class RehearsalError(UserError):
    """A profile cannot be rehearsed as it stands; the message says why."""


@dataclass(frozen=True)
class Rehearsal:
    """How a profile's runs are rehearsed on this machine (see the module docstring)."""

    profile: str  # the profile rehearsed
    device: str  # "cpu" or "cuda"
    batch_divisor: int
    processes: int  # torch.distributed processes of a job the profile runs on several
    steps: int  # steps per epoch at the largest batch
    datasets: tuple = ()  # (dataset of the rehearsal, dataset it stands for) pairs

    def stands_for(self, dataset: str) -> str:
        return dict(self.datasets).get(dataset, dataset)

    def batch(self, batch: int, processes: int = 1) -> int:
        """The batch a run with the recipe's ``batch`` rehearses with (a multiple of
        ``processes``, at least 2: CKD contrasts samples)."""
        if self.batch_divisor == 1:
            return batch
        step = max(2, processes)
        return max(step, round(batch / self.batch_divisor / step) * step)

    def describe(self) -> str:
        how = (f"batches / {self.batch_divisor}" if self.batch_divisor > 1
               else "the recipes' batches")
        return (f"REHEARSAL of profile {self.profile} on {self.device}: generated data, a few "
                f"steps per run, {how}, {self.processes} process(es) per distributed job; it "
                "checks the pipeline and measures step times, its numbers mean NOTHING")


# -- the rehearsal in force ------------------------------------------------------------------
_ACTIVE: list[Rehearsal | None] = [None]


def activate(rehearsal: Rehearsal | None) -> None:
    """Set the rehearsal of the notebook being executed (None: a real profile)."""
    _ACTIVE[0] = rehearsal


def active() -> Rehearsal | None:
    return _ACTIVE[0]


@contextlib.contextmanager
def restored():
    """Whatever the code inside activates, the rehearsal in force afterwards is the one before
    (plan mode executes notebooks, which activate their profile's, in this process)."""
    before = active()
    try:
        yield
    finally:
        activate(before)


def adapt(data: dict, batch_key: str = "batch_size", processes: int = 1) -> dict:
    """A config (as a dict) as the active rehearsal runs it: its batch (and CKD chunk) scaled,
    with the learning rate in proportion (the linear scaling rule, as a COCO run at another
    batch has it; detection configs get it from ``coco``), and its ``rehearsal`` field saying
    what it stands for. Unchanged outside a rehearsal."""
    spec = active()
    if spec is None:
        return data
    real = int(data[batch_key])
    data[batch_key] = spec.batch(real, processes)
    loss = data.get("loss") or {}
    if loss.get("chunk_size"):
        loss["chunk_size"] = max(1, round(loss["chunk_size"] * data[batch_key] / real))
    data["rehearsal"] = {"profile": spec.profile, "device": spec.device,
                         "dataset": spec.stands_for(data.get("dataset", "coco")),
                         batch_key: real}
    if batch_key == "batch_size" and data[batch_key] != real:
        data["rehearsal"]["lr"] = data["lr"]
        data["lr"] = data["lr"] * data[batch_key] / real
    return data


def adapt_config(config, batch_key: str = "batch_size", processes: int = 1):
    """:func:`adapt` for a config object (RunConfig or DetectionConfig)."""
    if active() is None:
        return config
    return type(config).from_dict(adapt(config.to_dict(), batch_key, processes))


# -- the derived profile ---------------------------------------------------------------------
def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_rehearsal(profile, device: str | None = None) -> Rehearsal:
    device = device or detect_device()
    if device == "cpu":
        return Rehearsal(profile.name, "cpu", CPU_BATCH_DIVISOR, CPU_PROCESSES, 1)
    import torch

    return Rehearsal(profile.name, "cuda", 1, max(1, torch.cuda.device_count()), GPU_STEPS)


def rehearsal_profile(profile, device: str | None = None):
    """The profile ``rehearse-<name>``: ``profile`` with the rehearsal's departures as its own
    section of every notebook (see the module docstring)."""
    from ckd_lib.study.params import notebook_parameters
    from ckd_lib.study.paths import notebooks_dir
    from ckd_lib.study.profiles import Profile

    if profile.rehearsal is not None:
        raise RehearsalError(f"profile {profile.name} is a rehearsal already")
    spec = make_rehearsal(profile, device)
    declared = {name: notebook_parameters(notebooks_dir() / f"{name}.py", where=name)
                for name in profile.notebooks}
    values = {name: profile.values_for(name, declared[name]) for name in profile.notebooks}
    small = _small_dataset(profile, {n: v for n, v in values.items()
                                     if _kind(declared[n]) == "small"}, spec)
    if small:
        spec = Rehearsal(**{**spec.__dict__, "datasets": (small,)})
    sections = {name: _overrides(name, declared[name], values[name], spec, small)
                for name in profile.notebooks}
    return Profile(name=PREFIX + profile.name, path=profile.path,
                   description=spec.describe() + ". " + profile.description,
                   notebooks=sections, report=profile.report, plugins=list(profile.plugins),
                   slurm=profile.slurm, parent=profile, rehearsal=spec)


def _kind(declared) -> str:
    if "iteration_scale" in declared:
        return "coco"
    if "nproc_per_node" in declared:
        return "folder"
    if "loss_repeats" in declared:
        return "efficiency"
    return "small"


def _small_dataset(profile, values: dict, spec: Rehearsal) -> tuple[str, str] | None:
    """(generated dataset, the dataset it stands for) shared by every CIFAR-like notebook
    (``values``: theirs; the teachers of notebook 10 are looked up by dataset), sized so that
    the largest batch any of them trains with takes ``spec.steps`` steps per epoch."""
    from ckd_lib.data.catalog import CATALOG, SMALL_DATASETS, dataset_base
    from ckd_lib.recipes import all_recipes

    real = {v["dataset"] for v in values.values()
            if "dataset" in v and dataset_base(v["dataset"]) in SMALL_DATASETS}
    if not real:
        return None
    if len(real) > 1:
        raise RehearsalError(f"profile {profile.name} trains on several datasets {sorted(real)}; "
                             "a rehearsal generates one")
    (dataset,) = real
    base = dataset_base(dataset)
    classes = CATALOG[base].num_classes
    if classes is None:  # synthetic: its own parameter
        params = dict(item.split("=", 1) for item in dataset.partition(":")[2].split(",")
                      if "=" in item)
        classes = int(params.get("num_classes", 10))
    batches = [r.batch_size for r in all_recipes() if r.dataset == "cifar100" and r.batch_size]
    batches += [b for v in values.values() for b in (v.get("batch_sizes") or [])]
    train = spec.batch(max(batches)) * spec.steps
    test = max(classes, TEST_IMAGES)
    return f"synthetic:num_classes={classes},num_train={train},num_test={test}", dataset


def _epoch_scale(scale: float, dataset: str) -> float:
    from ckd_lib.recipes import all_recipes

    shortest = min(r.epochs for r in all_recipes()
                   if r.dataset == dataset and r.epochs and r.method != "teacher")
    return scale if round(scale * shortest) <= MAX_KEPT_EPOCHS else 1.0 / shortest


def _overrides(notebook: str, declared, values: dict, spec: Rehearsal, small) -> dict:
    """The rehearsal's own values for one notebook (the profile's for everything else)."""
    from ckd_lib.data.imagefolder import NUM_CLASSES
    from ckd_lib.recipes import all_recipes

    kind = _kind(declared)
    out: dict = {}
    if kind == "small":
        if "dataset" in values and small:
            out["dataset"] = small[0]
        out.update({k: 0 for k in ("train_subset", "test_subset") if k in declared})
        if "epoch_scale" in values:
            out["epoch_scale"] = _epoch_scale(values["epoch_scale"], "cifar100")
        if "tsne_points" in declared:
            out["tsne_points"] = 0  # the whole (generated) test set
    elif kind == "efficiency":
        if small and "dataset" in values:
            out["dataset"] = small[0]
        out.update(steps=2, warmup=1, loss_repeats=2,
                   batch_size=spec.batch(values["batch_size"]))
    elif kind == "folder":
        dataset = values["dataset"]
        if dataset not in NUM_CLASSES or dataset == "places365":
            raise RehearsalError(
                f"notebook {notebook}: dataset {dataset!r} cannot be rehearsed; a generated JPEG "
                "folder stands in for imagenet only (torchvision's Places365 checks the md5 of "
                "its list files, which generated data cannot match)")
        processes = min(values["nproc_per_node"], spec.processes)
        batches = [values["batch_size"]] if values["batch_size"] else \
            [r.batch_size for r in all_recipes() if r.dataset == dataset]
        out.update(data_root=f"generated:classes={NUM_CLASSES[dataset]},train=1,val=1",
                   epoch_scale=_epoch_scale(values["epoch_scale"], dataset),
                   nproc_per_node=processes,
                   train_subset=spec.batch(max(batches), processes) * spec.steps,
                   test_subset=FOLDER_TEST_IMAGES)
        if not values["teacher_checkpoint"]:  # the recipe's torchvision weights: no download
            out["teacher_checkpoint"] = "untrained"
        if spec.device == "cpu":
            out["num_workers"] = 1
    elif kind == "coco":
        from ckd_lib.detection.config import parse_iteration_schedule

        longest = max(parse_iteration_schedule(r.schedule_text)[0] for r in all_recipes()
                      if r.dataset == "coco")  # 360k: the ReviewKD+CKD recipes
        scale = values["iteration_scale"]
        sizes = ",".join(f"{k}={v}" for k, v in COCO_IMAGES.items())
        out.update(data_root=f"shapes:{sizes},categories=coco",
                   iteration_scale=scale if round(scale * longest) <= REHEARSAL_ITERATIONS
                   else REHEARSAL_ITERATIONS / longest,
                   nproc_per_node=min(values["nproc_per_node"], spec.processes),
                   train_limit=0, val_limit=0, log_every=1,
                   teacher_checkpoints={k: "untrained" if v == "torchvision" else v
                                        for k, v in values["teacher_checkpoints"].items()})
        if values["student_weights"] == "imagenet":
            out["student_weights"] = "none"
        if spec.device == "cpu":
            out["workers"] = 1
    return {k: v for k, v in out.items() if k in declared}


# -- step times ------------------------------------------------------------------------------
def step_times(record: dict) -> dict | None:
    """Time per training step of a rehearsed run, from its record: the last epoch's (or, for
    detection, the last logged iteration's) training seconds over its steps, with the batch it
    ran, the batch it stands for and the evaluation seconds per image."""
    config = record["config"]
    stands = record.get("rehearsal") or config.get("rehearsal") or {}
    if record.get("task") == "detection":
        log = record.get("train_log") or []
        if not log:
            return None
        last = log[-1]
        steps = max(1, round(last["images"] / config["images_per_batch"]))
        history = record.get("history") or [{}]
        images = record["data"]["val"] or 1
        return {"seconds_per_step": last["seconds"] / steps, "steps": steps,
                "batch": config["images_per_batch"],
                "stands_for_batch": stands.get("images_per_batch", config["images_per_batch"]),
                "eval_seconds_per_image": history[-1].get("eval_seconds", 0.0) / images}
    history = record.get("history") or []
    if not history:
        return None
    last = history[-1]
    steps = max(1, math.ceil(last["train_images"] / config["batch_size"]))
    return {"seconds_per_step": last["train_seconds"] / steps, "steps": steps,
            "batch": config["batch_size"],
            "stands_for_batch": stands.get("batch_size", config["batch_size"]),
            "eval_seconds_per_image": last["eval_seconds"] / max(1, record["data"]["test_size"])}


def unit_key(task: str, dataset: str, teacher, students: list, batch: int) -> str:
    """What makes two jobs cost the same: the task, the dataset, the teacher, the students with
    their methods, and the batch (a rehearsal's: the batch it stands for)."""
    pairs = ",".join(sorted(f"{s}/{m}" for s, m in students))
    return f"{task}|{dataset}|{teacher or '-'}|{pairs}|{batch}"


def key_of_configs(task: str, configs: list[dict]) -> str:
    """:func:`unit_key` of a plan unit's configs (a rehearsal's stand for the real ones)."""
    from ckd_lib.data.catalog import dataset_base

    first = configs[0]
    stands = first.get("rehearsal") or {}
    if task == "detection":
        return unit_key(task, "coco", first.get("teacher"),
                        [(c["student"], c["method"]) for c in configs],
                        stands.get("images_per_batch", first["images_per_batch"]))
    return unit_key(task, dataset_base(stands.get("dataset", first["dataset"])),
                    first.get("teacher"), [(c["student"], c["method"]) for c in configs],
                    stands.get("batch_size", first["batch_size"]))


# -- the benchmark file ----------------------------------------------------------------------
def benchmarks_dir() -> Path:
    from ckd_lib.study.paths import project_root

    env = os.environ.get(BENCHMARKS_ENV)
    return Path(env) if env else project_root() / "benchmarks"


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_path(spec: Rehearsal, folder: Path | None = None) -> Path:
    slug = "cpu" if spec.device == "cpu" else re.sub(r"[^a-z0-9]+", "-",
                                                     device_name(spec.device).lower()).strip("-")
    return (folder or benchmarks_dir()) / f"{PREFIX}{spec.profile}-{slug}.json"


def _record_of(run: dict) -> dict | None:
    path = results.record_path(run["out_dir"], run["run_id"])
    try:
        return results.read_record(path)
    except (OSError, UserError):
        return None


def benchmark(plan, spec: Rehearsal, wall_seconds: float | None, load: dict) -> dict:
    """The rehearsal's measurements, one entry per job of its plan."""
    import torch

    units = []
    for unit in plan.units:
        records = [_record_of(run) for run in unit.runs]
        done = [r for r in records if r is not None and r.get("status") == "complete"]
        times = step_times(done[0]) if done else None
        first = unit.configs[0]
        units.append({
            "notebook": unit.notebook, "task": unit.task,
            "key": key_of_configs(unit.task, unit.configs),
            "teacher": first.get("teacher"),
            "students": [[c["student"], c["method"]] for c in unit.configs],
            "processes": unit.processes, "runs": len(unit.runs), "complete": len(done),
            "epochs": [c.get("epochs", c.get("iterations")) for c in unit.configs][0],
            **(times or {"seconds_per_step": None}),
            "device_seconds_per_step": None if times is None else times["seconds_per_step"] * (
                unit.processes if spec.device == "cuda" else 1),
        })
    return {
        "format": FORMAT, "what": "rehearsal", "profile": spec.profile,
        "device_type": spec.device, "device": device_name(spec.device),
        "device_count": torch.cuda.device_count() if spec.device == "cuda" else 1,
        "cpu_threads": torch.get_num_threads(), "batch_divisor": spec.batch_divisor,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "processes": spec.processes,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **results.git_state(), "host": platform.node(), "load_average": load,
        "wall_seconds": wall_seconds, "runs": sum(len(u.runs) for u in plan.units),
        "jobs": len(plan.units), "units": units,
    }


def write_benchmark(plan, spec: Rehearsal, wall_seconds: float | None, load: dict,
                    folder: Path | None = None) -> Path:
    path = benchmark_path(spec, folder)
    data = benchmark(plan, spec, wall_seconds, load)
    path.parent.mkdir(parents=True, exist_ok=True)
    results.atomic_write_json(path, data)
    return path


def summary(data: dict) -> str:
    """A few lines on what a rehearsal did and measured."""
    units = data["units"]
    complete = sum(u["complete"] for u in units)
    wall = data.get("wall_seconds")
    lines = [f"rehearsal of {data['profile']}: {complete} of {data['runs']} run(s) complete in "
             f"{data['jobs']} job(s)" + (f", {wall / 60:.1f} min" if wall else "") +
             f" on {data['device']} ({data['device_type']})"]
    by_notebook: dict[str, list[float]] = {}
    for unit in units:
        if unit["seconds_per_step"] is not None:
            by_notebook.setdefault(unit["notebook"], []).append(unit["seconds_per_step"])
    for name, values in by_notebook.items():
        values = sorted(values)
        lines.append(f"  {name:<20} {len(values):>4} job(s) timed, s/step median "
                     f"{values[len(values) // 2]:.3f} (max {values[-1]:.3f})")
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------------
def compare_plans(real, rehearsal) -> list[str]:
    """How the rehearsal's job graph departs from the profile's (empty: run for run, job for
    job, the same): a departure would mean the rehearsal skips or merges runs."""
    def shape(plan):
        out: dict[str, list] = {}
        for unit in plan.units:
            out.setdefault(unit.notebook, []).append(
                (unit.task, len(unit.runs), len(plan.dependencies(unit))))
        return out

    a, b = shape(real), shape(rehearsal)
    problems = []
    for notebook in dict.fromkeys(list(a) + list(b)):
        if a.get(notebook, []) != b.get(notebook, []):
            runs = (sum(n for _, n, _ in a.get(notebook, [])),
                    sum(n for _, n, _ in b.get(notebook, [])))
            problems.append(f"{notebook}: the profile plans {runs[0]} run(s) in "
                            f"{len(a.get(notebook, []))} job(s), its rehearsal {runs[1]} in "
                            f"{len(b.get(notebook, []))}")
    return problems


def check_against_profile(runner, plan, only=None, log=print) -> None:
    """Plan the profile itself and compare; its data may be missing (COCO): then say so."""
    from ckd_lib.study import planning
    from ckd_lib.study.runner import Runner

    real_runner = Runner(runner.profile.parent, results_dir=runner.results_dir)
    try:
        real = planning.collect(real_runner, only)
    except UserError as error:
        log(f"rehearsal: the profile's own plan could not be made here ("
            f"{str(error).splitlines()[0][:160]}); job graphs not compared")
        return
    problems = compare_plans(real, plan)
    if problems:
        raise RehearsalError("the rehearsal would not run what the profile runs: "
                             + "; ".join(problems))
    log(f"rehearsal: the same job graph as profile {runner.profile.parent.name} "
        f"({sum(len(u.runs) for u in plan.units)} run(s) in {len(plan.units)} job(s))")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def prepare_environment() -> None:
    """What the rehearsal's kernels, torchrun workers and SLURM jobs inherit: OpenMP threads
    that wait passively. libgomp's default, spinning, stalls a CPU shared with other work: one
    training step of resnet56 -> resnet20 at batch 8 took 7.5-10 s with torch's two threads on
    this 2-core machine at a load average of 10, and 0.12-0.2 s with passive waiting (0.26 s on
    one thread). A value set by the user is kept; the benchmark file records it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(runner, only: list[str] | None = None, log=print) -> int:
    """``--rehearse`` with the local executor: plan (and compare with the profile's plan),
    execute every notebook and the report, write the benchmark file."""
    from ckd_lib.study import planning

    spec = runner.profile.rehearsal
    started = time.perf_counter()
    before = load_average()
    log(spec.describe())
    plan = planning.collect(runner, only)
    check_against_profile(runner, plan, only, log)
    code = runner.run(only)
    if code:
        return code
    path = write_benchmark(plan, spec, time.perf_counter() - started,
                           {"before": before, "after": load_average()})
    log(summary(json.loads(path.read_text())) + f"\nstep times: {path}")
    return 0


def finish_after_jobs(runner, log=print) -> Path | None:
    """The benchmark file of a rehearsal whose runs SLURM trained (the notebooks job calls it
    after the report); wall time from the plan's creation."""
    from ckd_lib.study import planning
    from ckd_lib.study.executor import plan_path

    spec = runner.profile.rehearsal
    if spec is None:
        return None
    path = plan_path(runner)
    plan = planning.Plan.load(path)
    if plan is None:
        return None
    created = datetime.fromisoformat(json.loads(path.read_text())["created"])
    wall = (datetime.now(timezone.utc) - created).total_seconds()
    out = write_benchmark(plan, spec, wall, {"after": load_average()})
    log(f"step times: {out}")
    return out
