"""Teachers: train them with the teachers' recipe, or load mdistiller-style checkpoints, and check
each one's measured test accuracy against the published number (``literature.csv``).

The result is the profile's teacher index (``artifacts/teachers.json``): dataset, model,
checkpoint, how it was obtained, measured and published top-1. Every distillation notebook looks
its teacher checkpoints up there (``Settings.teacher_checkpoint``).
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from ckd_lib import recipes
from ckd_lib.study import planning
from ckd_lib.study.plan import PAPER_DATASET, Settings, StudyError

CHECKPOINT_LAYOUT = "{model}_vanilla/ckpt_epoch_240.pth"  # RepDistiller / mdistiller teachers


def all_teachers(recipe_dataset: str = PAPER_DATASET) -> list[str]:
    """The teachers of every pair of the recipes table, in order."""
    out = []
    for teacher, _ in recipes.pairs(recipe_dataset, "CKD"):
        if teacher not in out:
            out.append(teacher)
    return out


def literature_teacher(teacher: str, dataset: str = PAPER_DATASET) -> tuple[float | None, str]:
    """The published top-1 of ``teacher`` (literature.csv's teacher rows) and its source."""
    text = resources.files("ckd_lib.resources").joinpath("literature.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        if row["dataset"] == dataset and row["method"] == "teacher" and row["teacher"] == teacher:
            return float(row["top1"]), row["source"]
    return None, ""


def evaluate_checkpoint(settings: Settings, model: str, path: str | Path, seed: int = 0,
                        device: str = "auto") -> dict:
    """Top-1/top-5 of a checkpoint on the profile's test set (its subset, if any)."""
    import torch

    from ckd_lib.data import load_dataset, make_loader
    from ckd_lib.engine.evaluate import evaluate
    from ckd_lib.models import load_teacher

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    test = load_dataset(settings.dataset, "test", data_root=settings.data_root or None,
                        subset=settings.test_subset or None, seed=seed)
    net, info = load_teacher(model, path, num_classes=test.num_classes)
    net = net.to(device).eval()
    loader = make_loader("gpu", test, 500, train=False, seed=seed, device=torch.device(device))
    metrics = evaluate(net, loader, "none")
    return {"top1": metrics["top1"], "top5": metrics["top5"], "test_size": len(test.labels),
            "stored_accuracy": info.get("stored_accuracy"), "sha256": info.get("sha256")}


def prepare_teachers(settings: Settings, teachers: list[str], seed: int = 0,
                     teachers_dir: str = "", train_missing: bool = True,
                     tolerance: float = 1.0) -> list[dict]:
    """Load (from ``teachers_dir``) or train each teacher, measure it, write the teacher index.

    ``teachers`` are recipe names; with a model substitution several may map to one model, which
    is then prepared once. Returns the index entries (one per model).
    """
    from ckd_lib.models import file_sha256

    if planning.active():
        return plan_teachers(settings, teachers, seed, teachers_dir, train_missing)
    by_model: dict[str, str] = {}
    for name in teachers:
        by_model.setdefault(settings.model(name), name)
    entries, to_train = [], []
    for model, name in by_model.items():
        path = Path(teachers_dir) / CHECKPOINT_LAYOUT.format(model=model) if teachers_dir else None
        if path is not None and path.is_file():
            measured = evaluate_checkpoint(settings, model, path, seed=seed)
            entries.append({"model": model, "recipe": name, "source": f"loaded from {path}",
                            "checkpoint": str(path.resolve()), "sha256": measured["sha256"],
                            "stored_accuracy": measured["stored_accuracy"],
                            "measured_top1": measured["top1"], "measured_top5": measured["top5"],
                            "test_size": measured["test_size"], "run_id": None})
        elif path is not None and not train_missing:
            raise StudyError(f"teacher {model}: no checkpoint at {path} and train_missing is "
                             f"false")
        else:
            to_train.append((model, name))
    if to_train:
        configs = [settings.teacher_config(name, seed=seed) for _, name in to_train]
        for (model, name), config, record in zip(to_train, configs, settings.train(configs),
                                                 strict=True):
            if record["status"] != "complete":  # a diverged teacher never teaches
                raise StudyError(f"teacher {model} did not train: {record['run_id']} diverged "
                                 f"({(record.get('diverged') or {}).get('what')}); change its "
                                 "recipe (e.g. a lower lr) before distilling from it")
            checkpoint = Path(config.out_dir) / record["run_id"] / "model_last.pth"
            entries.append({"model": model, "recipe": name,
                            "source": f"trained here (run {record['run_id']})",
                            "checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint),
                            "stored_accuracy": record["last"]["top1"],
                            "measured_top1": record["last"]["top1"],
                            "measured_top5": record["last"]["top5"],
                            "test_size": record["data"]["test_size"], "run_id": record["run_id"],
                            "epochs": config.epochs})
    for entry in entries:
        entry["dataset"] = settings.dataset
        published, source = literature_teacher(entry["recipe"], settings.recipe_dataset)
        entry["literature_top1"], entry["literature_source"] = published, source
        entry["verdict"] = verdict(settings, entry, published, tolerance)
    settings.record_teachers(entries)
    return entries


def plan_teachers(settings: Settings, teachers: list[str], seed: int = 0, teachers_dir: str = "",
                  train_missing: bool = True) -> list[dict]:
    """Plan mode of :func:`prepare_teachers` (``ckd_lib.study.planning``): where each teacher's
    checkpoint is (a loaded one, not evaluated now) or will be (the teacher run's model, whose
    run is recorded), so that the students' configs can be planned before any teacher exists."""
    entries, configs = [], []
    for name in teachers:
        model = settings.model(name)
        if any(e["model"] == model for e in entries):
            continue
        path = Path(teachers_dir) / CHECKPOINT_LAYOUT.format(model=model) if teachers_dir else None
        if path is not None and path.is_file():
            checkpoint = str(path.resolve())
        elif path is not None and not train_missing:
            raise StudyError(f"teacher {model}: no checkpoint at {path} and train_missing is "
                             f"false")
        else:
            configs.append(settings.teacher_config(name, seed=seed))
            checkpoint = planning.model_path(configs[-1].out_dir, configs[-1].run_id())
        entries.append({"dataset": settings.dataset, "model": model, "recipe": name,
                        "checkpoint": checkpoint})
    planning.add_teachers(entries)
    settings.train(configs)
    return entries


def verdict(settings: Settings, entry: dict, published: float | None, tolerance: float) -> str:
    """Whether the measured accuracy can be compared with the published one, and how it fares."""
    if published is None:
        return "no published number"
    reasons = []
    if settings.dataset_base != settings.recipe_dataset:
        reasons.append(f"dataset is {settings.dataset}")
    if entry["model"] != entry["recipe"]:
        reasons.append(f"stand-in model {entry['model']}")
    if entry.get("run_id") and settings.epoch_scale != 1:
        reasons.append("shortened schedule")
    if settings.test_subset:
        reasons.append(f"test subset of {settings.test_subset}")
    if reasons:
        return "not comparable: " + ", ".join(reasons)
    diff = entry["measured_top1"] - published
    if abs(diff) <= tolerance:
        return f"OK: within {tolerance:g} points ({diff:+.2f})"
    return f"DIFFERS by {diff:+.2f} points (tolerance {tolerance:g})"
