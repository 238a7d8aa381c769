"""From a notebook's parameters to RunConfigs, trained runs and their records.

Every training notebook does the same four things, so they live here and the notebooks stay thin:

1. take the pairs and recipes from ``ckd_lib.recipes`` (the CIFAR-100 table), never from lists
   typed into a notebook;
2. apply the profile: the dataset actually used, shortened schedules (``epoch_scale`` multiplies
   every recipe's epochs, milestones and warm-up), subsets, and — for the CPU demo — small
   stand-in models (``substitute``: recipe model name -> model actually trained);
3. group the runs that share a teacher and a data stream into one ``ckd_lib.engine.train`` call
   (the students of a group share the teacher's forward pass), and spread the groups over the
   devices when several are given;
4. say loudly, in the notebook's output, when what runs is not the paper's setting.

Labels (``RunConfig.label``, not part of the run's hash) tell the report which table a run belongs
to: ``teacher``, ``same_arch``, ``cross_arch``, ``ablation <variant>``, ``matched_budget``.
A run that two notebooks share (the ablation's baseline is the main table's CKD run) gets the
main table's label from both, so its label never depends on which notebook ran first.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ckd_lib import recipes, results
from ckd_lib.config import RunConfig
from ckd_lib.data.catalog import dataset_base, display_name
from ckd_lib.errors import UserError
from ckd_lib.methods import get_method
from ckd_lib.models.registry import family
from ckd_lib.study import planning, rehearse
from ckd_lib.study.paths import StudyPaths, resolve

PAPER_DATASET = "cifar100"
TABLES = ("same_arch", "cross_arch")
TEACHER_INDEX = "teachers.json"


class StudyError(UserError, RuntimeError):
    """A study step cannot run; the message says what to do instead."""


# -- pairs -------------------------------------------------------------------------------------
def pair_name(teacher: str | None, student: str) -> str:
    return f"{teacher}->{student}"


def split_pair(text: str) -> tuple[str, str]:
    """``"resnet56->resnet20"`` -> ``("resnet56", "resnet20")``."""
    teacher, sep, student = (part.strip() for part in text.partition("->"))
    if not sep or not teacher or not student:
        raise StudyError(f"pair {text!r} is not written as 'teacher->student'")
    return teacher, student


def table_of(teacher: str, student: str) -> str:
    return "same_arch" if family(teacher) == family(student) else "cross_arch"


def table_pairs(table: str, selected: list[str] | tuple[str, ...] = (),
                recipe_dataset: str = PAPER_DATASET) -> list[tuple[str, str]]:
    """The (teacher, student) pairs of a table, in the recipes' order; ``selected`` (pair names)
    picks some of them and is checked against the table."""
    every = recipes.pairs(recipe_dataset, "CKD")
    if table == "all":
        pairs = every
    elif table in TABLES:
        pairs = [p for p in every if table_of(*p) == table]
    else:
        raise StudyError(f"unknown table {table!r}; accepted: {list(TABLES) + ['all']}")
    if not selected:
        return pairs
    chosen = []
    for text in selected:
        pair = split_pair(text)
        if pair not in pairs:
            raise StudyError(f"pair {text!r} is not in the {table} table of {recipe_dataset}; "
                             f"accepted: {[pair_name(*p) for p in pairs]}")
        chosen.append(pair)
    return chosen


# -- schedules ---------------------------------------------------------------------------------
def scale_epochs(epochs: int, scale: float) -> int:
    return epochs if scale == 1 else max(1, round(epochs * scale))


def scale_schedule(epochs: int, milestones, scale: float) -> tuple[int, list[int]]:
    """Epochs and step milestones multiplied by ``scale`` (at least 1 epoch; milestones clipped
    to 1..epochs, so a 240-epoch step recipe at scale 1/80 is 3 epochs with steps at 2, 2, 3)."""
    if scale == 1:
        return epochs, list(milestones)
    new_epochs = scale_epochs(epochs, scale)
    return new_epochs, [min(max(1, round(m * scale)), new_epochs) for m in milestones]


# -- the profile's settings ---------------------------------------------------------------------
@dataclass
class Settings:
    """The parameters every training notebook shares, and what follows from them."""

    profile: str = "demo"
    results_dir: str = "results"
    dataset: str = PAPER_DATASET
    recipe_dataset: str = PAPER_DATASET
    data_root: str = ""
    epoch_scale: float = 1.0
    train_subset: int = 0
    test_subset: int = 0
    data_seed: int = 0
    substitute: dict = field(default_factory=dict)
    devices: list = field(default_factory=list)
    # parameters given to the notebook explicitly rather than by its profile (the banner says so)
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_parameters(cls, params) -> Settings:
        """The settings of a notebook's resolved parameters (``study.parameters``): the fields
        the notebook declares, the others at their defaults (the paper's setting)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"overrides", "recipe_dataset"}
        values = {k: v for k, v in params.values.items() if k in names}
        return cls(**values, overrides=dict(params.overrides))

    def __post_init__(self):
        if not self.epoch_scale > 0:
            raise StudyError(f"epoch_scale={self.epoch_scale!r} must be positive")
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) < 0:
                raise StudyError(f"{name}={getattr(self, name)!r}: 0 (everything) or a positive "
                                 "number of images")

    # -- where ---------------------------------------------------------------------------------
    @property
    def paths(self) -> StudyPaths:
        return StudyPaths.of(self.profile, self.results_dir)

    @property
    def dataset_base(self) -> str:
        return dataset_base(self.dataset)

    @property
    def is_paper_setting(self) -> bool:
        return (self.dataset_base == self.recipe_dataset and not self.substitute
                and self.epoch_scale == 1 and not self.train_subset and not self.test_subset)

    def model(self, name: str | None) -> str | None:
        """The model trained for a recipe's model name (the name itself unless substituted)."""
        return None if name is None else self.substitute.get(name, name)

    def describe_pair(self, teacher: str, student: str) -> str:
        """The pair as the report names it (the models trained), and the paper's pair when a
        profile's stand-ins replace it."""
        from ckd_lib.report.palette import pair_label

        actual = pair_label(self.model(teacher), self.model(student))
        recipe = pair_label(teacher, student)
        return actual if actual == recipe else f"{actual} (stand-ins for the paper's {recipe})"

    # -- saying what runs ------------------------------------------------------------------------
    def deviations(self) -> list[str]:
        """Every way this notebook's runs differ from the paper's setting, in words."""
        out = [rehearse.active().describe()] if rehearse.active() else []
        pretty = display_name(self.dataset_base)
        paper = display_name(self.recipe_dataset)
        if self.dataset_base != self.recipe_dataset:
            out.append(f"DATASET: runs on {pretty} ({self.dataset}), NOT {paper}. These numbers "
                       f"demonstrate the pipeline; they are not the paper's {paper} results and "
                       f"must not be compared with them.")
        if self.substitute:
            subs = ", ".join(f"{k} -> {v}" for k, v in self.substitute.items())
            out.append(f"MODELS: stand-ins replace the paper's models: {subs}.")
        if self.epoch_scale != 1:
            out.append(f"SCHEDULE: every recipe shortened x{self.epoch_scale:g} "
                       f"(240 epochs -> {scale_epochs(240, self.epoch_scale)}, "
                       f"480 -> {scale_epochs(480, self.epoch_scale)}).")
        if self.train_subset or self.test_subset:
            out.append(f"DATA SUBSETS: {self.train_subset or 'all'} training and "
                       f"{self.test_subset or 'all'} test images (class-stratified).")
        return out

    def banner(self, title: str) -> str:
        """Print what this notebook reproduces, on which data, under which profile, with which
        explicit overrides, and how far that is from the paper's setting. Returns the text."""
        return print_banner(f"{title}, on {display_name(self.dataset)}", self.profile,
                            self.deviations(), self.overrides)

    # -- configs -----------------------------------------------------------------------------------
    def _common(self, data: dict, seed: int, label: str) -> dict:
        data.update(dataset=self.dataset, seed=seed, label=label,
                    train_subset=self.train_subset or None, test_subset=self.test_subset or None,
                    data_seed=self.data_seed, data_root=self.data_root or None,
                    out_dir=str(self.paths.runs), progress=False)
        data["epochs"], data["milestones"] = scale_schedule(data["epochs"], data["milestones"],
                                                            self.epoch_scale)
        return data

    def config(self, teacher: str, student: str, method: str, *, seed: int = 0,
               label: str | None = None, schedule_from: str | None = None,
               budget_from: str | None = None, loss: dict | None = None,
               **overrides) -> RunConfig:
        """The run of one table cell: the recipe of ``teacher->student`` (recipe names) for
        ``method``, with this profile's dataset, models, schedule scale and subsets.

        A method without a recipe row of its own (an ablation variant such as KD+CKD, or a
        plugin's) borrows the recipe its registration names (``ckd_lib.recipes.get_recipe``).
        ``schedule_from``: take epochs, schedule and milestones from another method's recipe of
        the same pair; the lr and batch size stay the method's own (equal epochs: the optimizer
        steps differ where the batch sizes do). ``budget_from``: the same and the batch size
        too, so the run takes the other recipe's optimizer steps and images (the lr stays the
        method's own). The matched-budget runs use both.
        ``label`` defaults to the pair's table.
        """
        data = RunConfig.from_recipe(self.recipe_dataset, teacher, student, method).to_dict()
        if schedule_from and budget_from:
            raise StudyError("give schedule_from or budget_from, not both")
        if schedule_from or budget_from:
            other = recipes.get_recipe(self.recipe_dataset, teacher, student,
                                       schedule_from or budget_from)
            data.update(epochs=other.epochs, schedule=other.schedule,
                        milestones=list(other.milestones), lr_decay=other.lr_decay or 0.1)
            if budget_from:
                data["batch_size"] = other.batch_size
        data["student"] = self.model(student)
        data["loss"].update(loss or {})
        if get_method(method).needs_teacher:
            data["teacher"] = self.model(teacher)
            data["teacher_checkpoint"] = self.teacher_checkpoint(data["teacher"])
        else:
            data["teacher"] = None
        data = self._common(data, seed, label if label is not None else table_of(teacher,
                                                                                  student))
        data.update(overrides)
        self._scale_warmup(data, explicit=loss or {})
        return RunConfig.from_dict(rehearse.adapt(data))

    def teacher_config(self, teacher: str, *, seed: int = 0, label: str = "teacher",
                       **overrides) -> RunConfig:
        """The CE run that trains ``teacher`` (a recipe name) with the teachers' recipe."""
        data = RunConfig.from_recipe(self.recipe_dataset, None, teacher, "teacher").to_dict()
        data["student"] = self.model(teacher)
        data = self._common(data, seed, label)
        data.update(overrides)
        return RunConfig.from_dict(rehearse.adapt(data))

    def _scale_warmup(self, data: dict, explicit: dict) -> None:
        if self.epoch_scale == 1 or "warmup_epochs" in explicit:
            return
        params = {**get_method(data["method"]).defaults(), **data["loss"]}
        warmup = params.get("warmup_epochs")
        if warmup:
            data["loss"]["warmup_epochs"] = max(1, round(warmup * self.epoch_scale))

    # -- teachers ----------------------------------------------------------------------------------
    @property
    def teacher_index_path(self) -> Path:
        return self.paths.artifacts / TEACHER_INDEX

    def teacher_entries(self) -> list[dict]:
        path = self.teacher_index_path
        if not path.is_file():
            return []
        return json.loads(path.read_text()).get("teachers", [])

    def record_teachers(self, entries: list[dict]) -> Path:
        """Add or replace entries (by dataset and model) in the profile's teacher index."""
        keep = {(e["dataset"], e["model"]): e for e in self.teacher_entries()}
        for entry in entries:
            keep[(entry["dataset"], entry["model"])] = entry
        path = self.teacher_index_path
        results.atomic_write_json(path, {"teachers": list(keep.values())})
        path.chmod(0o644)
        return path

    def teacher_checkpoint(self, model: str) -> str:
        """Checkpoint of teacher ``model`` on this dataset (from the index 10_teachers writes;
        in plan mode, where the planned teacher run will write it)."""
        planned = planning.planned_teacher(self.dataset, model)
        if planned:
            return planned
        for entry in self.teacher_entries():
            if entry["dataset"] == self.dataset and entry["model"] == model:
                if not Path(entry["checkpoint"]).is_file():
                    raise StudyError(f"teacher {model}: checkpoint {entry['checkpoint']} listed "
                                     f"in {self.teacher_index_path} is missing; re-run "
                                     f"10_teachers")
                return entry["checkpoint"]
        raise StudyError(
            f"no checkpoint of teacher {model} on {self.dataset} in {self.teacher_index_path}: "
            f"run the teachers notebook first (python -m ckd_lib.study --profile {self.profile} "
            f"--only 10_teachers)")

    # -- training ----------------------------------------------------------------------------------
    def train(self, configs: list[RunConfig]) -> list[dict]:
        """Train ``configs`` (finished runs are skipped) and return their records, in order.

        Runs that share a teacher and a data stream train together; with several ``devices``
        the groups are spread over them (ckd_lib.study.devices). A run that diverges does not
        stop the study: its record (status "diverged") is returned in its place, said in the
        output, left out of every table and listed as diverged by the report.
        """
        configs = list(configs)
        if planning.active():  # collecting a plan (ckd_lib.study.planning): record, train nothing
            return planning.record(group_configs(configs))
        for config in configs:
            config.validate()
        first: dict[str, RunConfig] = {}
        for config in configs:  # the same run asked twice (a shared baseline) trains once
            first.setdefault(config.run_id(), config)
        unique = list(first.values())
        groups = group_configs(unique)
        done = {c.run_id(): self._finished(c) for c in unique}
        todo = [g for g in groups if any(done[c.run_id()] is None for c in g)]
        complete = sum(r is not None for r in done.values())
        print(f"{len(unique)} run(s) in {len(groups)} group(s); {complete} already done; "
              f"{len(todo)} group(s) to train"
              + (f" on devices {self.devices}" if self.devices and todo else ""))
        if todo:
            run_groups(todo, self.devices, self.paths.logs / "groups")
        records = [self.record(c) for c in configs]
        diverged = sorted({r["run_id"] for r in records if r["status"] == "diverged"})
        if diverged:
            print(f"WARNING: {len(diverged)} run(s) diverged and are left out of the tables: "
                  f"{', '.join(diverged)}")
        return records

    @staticmethod
    def _finished(config: RunConfig) -> dict | None:
        """The run's complete record (believed only if its files agree), or the record of a
        divergence, computed from the inputs it would use now: nothing to train (the engine's
        own test, ``RunBook.finished``)."""
        from ckd_lib.engine.bookkeeping import RunBook  # not at import: the report uses study

        return RunBook.for_config(config).finished()

    def record(self, config: RunConfig) -> dict:
        record = self._finished(config)
        if record is None:
            raise StudyError(f"run {config.run_id()} has no complete record in {config.out_dir}")
        return record

    # -- artifacts ---------------------------------------------------------------------------------
    def save_artifact(self, name: str, data=None, figure=None) -> None:
        """``artifacts/<name>.json`` and/or ``artifacts/<name>.png`` for the report (printed)."""
        folder = self.paths.artifacts
        folder.mkdir(parents=True, exist_ok=True)
        if data is not None:
            payload = {"profile": self.profile, "dataset": self.dataset, **data}
            path = folder / f"{name}.json"
            results.atomic_write_json(path, payload)
            path.chmod(0o644)
            print("artifact:", path)
        if figure is not None:
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")
            print("artifact:", path)


def print_banner(head: str, profile: str, deviations: list[str], overrides: dict) -> str:
    """One banner per notebook (printed once: the executed notebook, its log and the terminal
    all show the same text): what runs, the profile, the explicit overrides, and every departure
    from the paper's setting, loudly. Returns the text."""
    head = f"{head} -- profile '{profile}'"
    given = [f"{k}={v!r}" for k, v in overrides.items()]
    extra = [f"OVERRIDES (given explicitly, not the profile's): {', '.join(given)}"] if given \
        else []
    if not deviations:
        text = "\n".join([head, "Setting: the published recipes of the paper."] + extra)
    else:
        bar = "!" * 100
        body = "\n".join(f"!! {line}" for line in deviations + extra)
        text = f"{bar}\n!! {head}\n!! NOT THE PAPER'S SETTING:\n{body}\n{bar}"
    print(text)
    return text


# -- groups ------------------------------------------------------------------------------------
def group_key(config: RunConfig) -> tuple:
    from ckd_lib.engine.trainer import SHARED_FIELDS

    return tuple(json.dumps(getattr(config, name), sort_keys=True, default=str)
                 for name in SHARED_FIELDS)


def group_configs(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """Configs that agree on every field a group shares (teacher, data, epochs, batch, seed...),
    in first-seen order."""
    groups: dict[tuple, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(group_key(config), []).append(config)
    return list(groups.values())


def run_groups(groups: list[list[RunConfig]], devices=None, work_dir: str | Path = "") -> None:
    """Train each group: in this process when no devices are given, else with one worker process
    per device (``ckd_lib.study.devices``)."""
    from ckd_lib.study.devices import parse_devices, run_groups_on_devices

    devices = parse_devices(devices)
    if not devices:
        from ckd_lib.engine import train

        for group in groups:
            train(group, allow_diverged=True)
        return
    run_groups_on_devices(groups, devices, resolve(work_dir or "results/_groups"))


# -- tables ------------------------------------------------------------------------------------
def mean_std(values) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def summary(records: list[dict], rows: list[str] | None = None):
    """A quick table of records, one row per configuration: n seeds, best and last top-1 as
    mean ± std (sample std). ``rows``: a name per record (e.g. the ablation variant) to group by
    instead of (teacher, student, method). Diverged runs are left out (the report lists them).
    The report builds the full tables."""
    import pandas as pd

    from ckd_lib.report.collect import images_of, iterations_of

    seen = {}
    for i, record in enumerate(records):
        if record["run_id"] in seen or record.get("status", "complete") != "complete":
            continue
        seen[record["run_id"]] = (rows[i] if rows else None, record)
    groups: dict[tuple, list[dict]] = {}
    for name, record in seen.values():
        cfg = record["config"]
        key = (name,) if name is not None else (cfg["teacher"] or "-", cfg["student"],
                                                cfg["method"])
        groups.setdefault(key, []).append(record)
    out = []
    for key, recs in groups.items():
        cfg = recs[0]["config"]
        row = {"row": key[0]} if rows else {"teacher": key[0], "student": key[1],
                                            "method": key[2]}
        row.update({
            "n": len(recs), "seeds": ",".join(str(r["config"]["seed"]) for r in recs),
            "best top-1": mean_std([r["best"]["top1"] for r in recs]),
            "last top-1": mean_std([r["last"]["top1"] for r in recs]),
            "epochs": cfg["epochs"], "schedule": cfg["schedule"], "batch": cfg["batch_size"],
            # the budget: optimizer steps and images seen (epochs alone hide the batch size)
            "steps": iterations_of(recs[0]), "images": images_of(recs[0]),
            # a group's students share the training time: this is the group's time per epoch
            "group s/epoch": round(sum(r["train_seconds"] for r in recs)
                                   / max(sum(r["epochs_done"] for r in recs), 1), 2),
        })
        out.append(row)
    return pd.DataFrame(out)

