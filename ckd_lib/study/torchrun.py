"""ImageNet-scale runs from a notebook: configs from the recipes, one torchrun job per group.

A notebook kernel cannot host DistributedDataParallel over several GPUs, so the ImageNet notebook
writes each group of runs (students sharing a teacher and a schedule) to a YAML file and launches
``torchrun --nproc_per_node=N -m ckd_lib.train --config <file>`` as a subprocess, relaying one
line per epoch. The records it reads back are the same the CIFAR notebooks produce; finished runs
are skipped without starting torchrun at all.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from ckd_lib import results
from ckd_lib.config import RunConfig
from ckd_lib.engine.bookkeeping import RunBook
from ckd_lib.methods import get_method
from ckd_lib.recipes import all_recipes
from ckd_lib.study import planning
from ckd_lib.study.paths import resolve
from ckd_lib.study.plan import StudyError, group_configs, scale_schedule, split_pair

GENERATED = "generated"


def folder_data_root(data_root: str, dataset: str, paths) -> str:
    """The folder holding ``<dataset>/{train,val}``: a path; "" for the default data root; or
    "generated", a small generated JPEG set under the profile (demos and smoke runs)."""
    if data_root == GENERATED:
        from ckd_lib.data.demo_folder import make_demo_imagefolder

        return str(make_demo_imagefolder(paths.root / "data", dataset))
    return str(resolve(data_root)) if data_root else ""


def folder_deviations(p) -> list[str]:
    """How a notebook 70 run departs from the paper's setting, in words (empty: it does not)."""
    out = []
    if p.data_root == GENERATED:
        out.append(f"DATA: a generated four-class JPEG folder, NOT {p.dataset}; these numbers "
                   "demonstrate the pipeline only")
    if p.epoch_scale != 1.0:
        out.append(f"SCHEDULE: every recipe shortened x{p.epoch_scale:g}")
    if p.train_subset or p.test_subset:
        out.append(f"DATA SUBSETS: {p.train_subset or 'all'} training and "
                   f"{p.test_subset or 'all'} validation images")
    if p.teacher_checkpoint not in ("", "torchvision"):
        out.append(f"TEACHER: {p.teacher_checkpoint} instead of torchvision's pretrained weights")
    if p.batch_size:
        out.append(f"BATCH: {p.batch_size} instead of the recipe's")
    return out


def folder_pairs(dataset: str, selected: list[str] | tuple[str, ...] = ()) -> list[tuple]:
    """The (teacher, student) pairs with a CKD recipe on `dataset`, or the `selected` ones."""
    known = [(r.teacher, r.student) for r in all_recipes()
             if r.dataset == dataset and r.method == "CKD"]
    if not selected:
        return known
    pairs = [split_pair(text) for text in selected]
    unknown = [f"{t}->{s}" for t, s in pairs if (t, s) not in known]
    if unknown:
        raise StudyError(f"no {dataset} recipes for {unknown}; pairs with recipes: "
                         f"{[f'{t}->{s}' for t, s in known]}")
    return pairs


def folder_configs(dataset: str, pairs, methods, seeds, *, out_dir: str, data_root: str = "",
                   epoch_scale: float = 1.0, train_subset: int = 0, test_subset: int = 0,
                   teacher_checkpoint: str = "", negatives_scope: str = "local",
                   batch_size: int = 0, device: str = "auto", num_workers: int = 0,
                   log: Callable[[str], None] = print) -> list[RunConfig]:
    """One RunConfig per (pair, method, seed) that has a published recipe; others are reported."""
    configs = []
    for teacher, student in pairs:
        for method in methods:
            if not any(r.dataset == dataset and r.teacher == teacher and r.student == student
                       and r.method == method for r in all_recipes()):
                log(f"no published {dataset} recipe for {teacher}->{student} {method}: skipped")
                continue
            for seed in seeds:
                overrides = {"seed": seed, "out_dir": out_dir, "label": dataset,
                             "device": device, "progress": False}
                if data_root:
                    overrides["data_root"] = data_root
                if teacher_checkpoint:
                    overrides["teacher_checkpoint"] = teacher_checkpoint
                if batch_size:
                    overrides["batch_size"] = batch_size
                if num_workers:
                    overrides["num_workers"] = num_workers
                for key, value in (("train_subset", train_subset), ("test_subset", test_subset)):
                    if value:
                        overrides[key] = value
                config = RunConfig.from_recipe(dataset, teacher, student, method, **overrides)
                if epoch_scale != 1.0:
                    config.epochs, config.milestones = scale_schedule(
                        config.epochs, config.milestones, epoch_scale)
                if "negatives_scope" in get_method(method).params():  # methods with a CKD term
                    config.loss["negatives_scope"] = negatives_scope
                configs.append(config.validate())
    return configs


def launch(configs: list[RunConfig], nproc_per_node: int, work_dir: Path,
           log: Callable[[str], None] = print) -> list[dict]:
    """Run each group under torchrun (unless all its records exist) and return every record.
    In plan mode (``ckd_lib.study.planning``) the groups are recorded and nothing runs."""
    if planning.active():
        return planning.record(group_configs(configs), processes=nproc_per_node)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for group in group_configs(configs):
        if all(RunBook.for_config(c).completed(log) for c in group):
            log(f"done already: {', '.join(c.run_id() for c in group)}")
            continue
        name = hashlib.sha256("|".join(c.run_id() for c in group).encode()).hexdigest()[:12]
        config_file = work_dir / f"group-{name}.yaml"
        results.atomic_write_bytes(config_file, yaml.safe_dump(
            [c.to_dict() for c in group], sort_keys=False).encode())
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc_per_node}", "-m", "ckd_lib.train",
                   "--config", str(config_file)]
        log("$ " + " ".join(command[1:]))
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1) as proc:
            tail = []
            for line in proc.stdout:
                line = line.rstrip()
                tail = (tail + [line])[-40:]
                if "epoch" in line or "error" in line.lower() or "resumed" in line:
                    log(line)
        if proc.returncode != 0:
            raise StudyError(f"torchrun failed (exit {proc.returncode}) for {config_file}:\n"
                             + "\n".join(tail))
    return [results.read_record(results.record_path(c.out_dir, c.run_id())) for c in configs]


def results_table(records: list[dict]):
    """One row per run: pair, method, seed, best and last top-1, last top-5, GPUs used."""
    import pandas as pd

    rows = []
    for r in records:
        cfg = r["config"]
        rows.append({"pair": f"{cfg['teacher']}->{cfg['student']}", "method": cfg["method"],
                     "seed": cfg["seed"], "epochs": cfg["epochs"],
                     "best top-1": r["best"]["top1"], "last top-1": r["last"]["top1"],
                     "last top-5": r["last"]["top5"],
                     "teacher top-1": (r.get("teacher") or {}).get("test_top1"),
                     "GPUs": (r.get("distributed") or {}).get("world_size"),
                     "run": r["run_id"]})
    return pd.DataFrame(rows)
