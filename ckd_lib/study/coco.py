"""What notebook 80_coco does, as functions: the COCO cells' configs, their runs, their table.

The notebook only sets parameters and calls these. A cell of the paper's COCO table is
(teacher -> student, method) with the recipe of ``ckd_lib/resources``; the students' own AP is
the ``baseline`` method (the detector trained alone), and the teachers' own AP is measured by
the engine on the same validation images and stored in every distillation record.

Teachers: a checkpoint per teacher backbone (a Detectron2 model converted with
``python -m ckd_lib.detection.convert``, or "torchvision" for the R50 COCO weights). A teacher
with no checkpoint given is trained first by the same engine with its teacher recipe, and its
``model_last.pth`` becomes the students' teacher.

Runs go to ``results/<profile>/detection/`` (one record per run, as classification runs do in
``runs/``); with ``nproc_per_node > 1`` each run is one ``torchrun`` job. A batch other than
the recipe's (``images_per_batch``) scales the lr in proportion (the linear scaling rule).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import yaml

from ckd_lib import results
from ckd_lib.detection.config import (
    BACKBONE_ALIASES,
    DetectionConfig,
    parse_iteration_schedule,
)
from ckd_lib.detection.shapes import make_shapes_dataset
from ckd_lib.recipes import get_recipe
from ckd_lib.study import planning, rehearse
from ckd_lib.study.paths import StudyPaths, resolve
from ckd_lib.study.plan import StudyError
from ckd_lib.study.torchrun import run_torchrun

__all__ = ["COCO_PAIRS", "coco_data_root", "coco_deviations", "detection_dir", "plan_students",
           "plan_teachers", "run_detection"]

COCO_PAIRS = ("R101->R18", "R101->R50", "R50->MobileNetV2")
SHAPES = "shapes"


def detection_dir(paths: StudyPaths) -> Path:
    return paths.root / "detection"


def coco_data_root(data_root: str, paths: StudyPaths) -> str:
    """The COCO root: a path; "" for $CKD_DATA_ROOT/coco (else data/coco); or "shapes", a
    generated COCO-format set of coloured shapes (for demos and tests) under the profile."""
    if data_root == SHAPES:
        return str(make_shapes_dataset(paths.root / "data" / "shapes", num_train=64,
                                       num_val=24, seed=0))
    if data_root.startswith(SHAPES + ":"):
        # "shapes:train=4,val=2,min_size=480,max_size=640,categories=coco" (a rehearsal's)
        options = dict(item.split("=", 1) for item in data_root.split(":", 1)[1].split(","))
        sizes = {k: int(options.pop(k, d)) for k, d in (("train", 64), ("val", 24),
                                                          ("min_size", 96), ("max_size", 160))}
        folder = data_root.replace(":", "_").replace(",", "_").replace("=", "")
        return str(make_shapes_dataset(paths.root / "data" / folder, num_train=sizes["train"],
                                       num_val=sizes["val"], min_size=sizes["min_size"],
                                       max_size=sizes["max_size"], seed=0, **options))
    if data_root:
        return str(resolve(data_root))
    base = os.environ.get("CKD_DATA_ROOT", "data")
    return str(resolve(Path(base) / "coco"))


def coco_deviations(p) -> list[str]:
    """How a notebook 80 run departs from the paper's setting, in words (empty: it does not)."""
    departures = {k: v for k, v in dict(
        data=p.data_root if p.data_root.startswith(SHAPES) else None,
        iteration_scale=None if p.iteration_scale == 1.0 else p.iteration_scale,
        images_per_batch=p.images_per_batch, train_min_sizes=p.train_min_sizes,
        test_min_size=p.test_min_size, max_size=p.max_size,
        roi_batch_per_image=p.roi_batch_per_image, train_limit=p.train_limit,
        val_limit=p.val_limit, substitute=p.substitute,
        student_weights=None if p.student_weights == "imagenet" else p.student_weights).items()
        if v}
    out = [f"{k}={v}" for k, v in departures.items()]
    if rehearse.active():
        out.insert(0, rehearse.active().describe())
    if departures.get("data"):
        out.insert(0, "DATA: generated shapes in COCO's format, NOT MS-COCO; these numbers "
                      "demonstrate the pipeline only")
    return out


def _pair(text: str) -> tuple[str, str]:
    teacher, sep, student = text.partition("->")
    if not sep or teacher not in BACKBONE_ALIASES or student not in BACKBONE_ALIASES:
        raise StudyError(f"COCO pair {text!r} must read 'TEACHER->STUDENT' with names from "
                         f"{sorted(BACKBONE_ALIASES)}; the paper's pairs are {list(COCO_PAIRS)}")
    return teacher, student


# Options whose 0 / [] in the notebook means "the recipe's value".
RECIPE_OVERRIDES = ("images_per_batch", "train_min_sizes", "test_min_size", "max_size",
                    "roi_batch_per_image", "train_limit", "val_limit")


def _common(options: dict, paths: StudyPaths, seed: int) -> dict:
    out = {"out_dir": str(detection_dir(paths)), "seed": seed, "label": "coco"}
    out.update({k: v for k, v in options.items()
                if k not in RECIPE_OVERRIDES or v not in (0, [], None)})
    if out.get("student_weights") == "none":  # the notebooks' spelling of "no pretraining"
        out["student_weights"] = None
    if "train_min_sizes" in out:
        out["train_min_sizes"] = tuple(out["train_min_sizes"])
    return out


def _scaled(teacher: str | None, student: str, method: str, scale: float,
            iterations: int | None, options: dict) -> DetectionConfig:
    recipe = get_recipe("coco", teacher, student, method)
    published, _ = parse_iteration_schedule(recipe.schedule_text)
    total = iterations or max(1, round(published * scale))
    config = DetectionConfig.from_recipe(teacher, student, method, iterations=total, **options)
    config = rehearse.adapt_config(config, "images_per_batch")  # a rehearsal's smaller batch
    if config.images_per_batch != recipe.batch_size:
        # another batch keeps the recipe's lr per image (the linear scaling rule)
        config.lr = recipe.lr * config.images_per_batch / recipe.batch_size
    return config


def plan_teachers(pairs: list[str], teacher_checkpoints: dict, paths: StudyPaths, *,
                  data_root: str, iteration_scale: float = 1.0, seed: int = 0,
                  substitute: dict | None = None, **options) -> list[DetectionConfig]:
    """Configs that train the teachers that have no checkpoint (the teacher recipes)."""
    substitute = substitute or {}
    configs = []
    for teacher in dict.fromkeys(_pair(p)[0] for p in pairs):
        if teacher_checkpoints.get(teacher):
            continue
        common = _common(options, paths, seed)
        common.update(data_root=data_root, label="coco teacher")
        config = _scaled(None, teacher, "teacher", iteration_scale, None, common)
        if teacher in substitute:
            config = dataclasses.replace(config, student=BACKBONE_ALIASES.get(
                substitute[teacher], substitute[teacher]))
        configs.append(config.validate())
    return configs


def plan_students(pairs: list[str], methods: list[str], seeds: list[int],
                  teacher_checkpoints: dict, paths: StudyPaths, *, data_root: str,
                  iteration_scale: float = 1.0, matched_budget: bool = False,
                  substitute: dict | None = None, **options) -> list[DetectionConfig]:
    """One config per (pair, method, seed); "baseline" is the student alone (its own AP).

    ``matched_budget``: every method runs as many iterations as the pair's ReviewKD+CKD recipe
    (360k at scale 1) with milestones in proportion, instead of its own recipe's.
    ``teacher_checkpoints`` maps a teacher name (R101, R50) to its checkpoint; teachers trained
    by ``plan_teachers`` are found by their run id.
    """
    substitute = substitute or {}
    configs, seen = [], set()
    for text in pairs:
        teacher, student = _pair(text)
        budget = None
        if matched_budget:
            budget = _scaled(teacher, student, "ReviewKD+CKD", iteration_scale, None,
                             {"data_root": "."}).iterations
        # one teacher per pair: the trained teacher's seed is the first seed's (plan_teachers)
        checkpoint = teacher_checkpoints.get(teacher) or trained_teacher(
            teacher, paths, data_root, iteration_scale, seeds[0], substitute, options)
        for method in methods:
            for seed in seeds:
                common = _common(options, paths, seed)
                common["data_root"] = data_root
                if method == "baseline":
                    config = _scaled(None, student, "baseline", iteration_scale, budget, common)
                else:
                    common["teacher_checkpoint"] = checkpoint
                    config = _scaled(teacher, student, method, iteration_scale, budget, common)
                changes = {}
                if student in substitute:
                    changes["student"] = BACKBONE_ALIASES.get(substitute[student],
                                                              substitute[student])
                if method != "baseline" and teacher in substitute:
                    changes["teacher"] = BACKBONE_ALIASES.get(substitute[teacher],
                                                              substitute[teacher])
                config = dataclasses.replace(config, **changes)
                if config.run_id() not in seen:  # a baseline shared by two pairs runs once
                    seen.add(config.run_id())
                    configs.append(config)
    return configs


def trained_teacher(teacher: str, paths: StudyPaths, data_root: str, iteration_scale: float,
                    seed: int, substitute: dict, options: dict) -> str:
    """Where plan_teachers' run for ``teacher`` leaves its weights."""
    (config,) = plan_teachers([f"{teacher}->R18"], {}, paths, data_root=data_root,
                              iteration_scale=iteration_scale, seed=seed,
                              substitute=substitute, **options)
    return str(Path(config.out_dir) / config.run_id() / "model_last.pth")


def run_detection(configs: list[DetectionConfig], nproc_per_node: int = 1,
                  config_dir: Path | None = None) -> list[dict]:
    """Train each config (skipping finished runs, resuming interrupted ones); their records.

    One process runs them in turn in this kernel; ``nproc_per_node > 1`` starts one
    ``torchrun`` job per config (its YAML is written to ``config_dir``) and reads its record.
    In plan mode (``ckd_lib.study.planning``) each config is recorded as one job; nothing runs.
    """
    if planning.active():
        return planning.record([[c] for c in configs], task="detection",
                               processes=nproc_per_node)
    from ckd_lib.detection.engine import train_detection

    records = []
    for config in configs:
        config.validate()
        if nproc_per_node <= 1:
            records.append(train_detection(config))
            continue
        folder = Path(config_dir or Path(config.out_dir) / "_configs")
        path = folder / f"{config.run_id()}.yaml"
        results.atomic_write_bytes(path, yaml.safe_dump(config.to_dict()).encode())
        command = [sys.executable, "-m", "torch.distributed.run",
                   f"--nproc_per_node={nproc_per_node}", "-m", "ckd_lib.detection.train",
                   "--config", str(path)]
        run_torchrun(command, path, ("iteration", "box AP", "resumed"))
        records.append(results.read_record(results.record_path(config.out_dir,
                                                               config.run_id())))
    return records
