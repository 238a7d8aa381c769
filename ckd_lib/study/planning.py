"""Plan mode: every run of a profile, known without training any of them.

Why: a cluster needs the whole list of runs before anything trains (one job per group of runs,
teachers before their students, a cost estimate), but the runs are defined inside the notebooks,
by code that calls the training entry points: ``Settings.train`` (and ``prepare_teachers``
through it), ``torchrun.launch`` and ``coco.run_detection``. So plan mode executes each notebook
of the profile in this process, with the parameters the runner would give it, up to its last
cell that calls one of them (:data:`TRAINING_CALL`); the cells after it (tables, figures, the
report) need records and are not executed, and a notebook that trains nothing is not executed.

While a plan is collected (:func:`collecting`), the entry points call :func:`record` with their
runs grouped as they would train them, and return at once without training. A teacher that a
notebook would train is planned at the ``model_last.pth`` its run will write
(:func:`add_teachers`), and ``Settings.teacher_checkpoint`` answers with that path, so the
students' configs are the ones the notebooks will build once the teachers exist. A run that two
notebooks share (the ablation's baseline is a main-table run) is planned once, in the first.

The same collection is the study's check (``--check``, and the runner before its first
notebook): every config a notebook would train is validated, so an unknown method, a method
without a recipe or a bad ``epoch_scale`` fails before any notebook runs, not inside the fifth
one. In that mode a notebook that trains nothing runs its first cell calling ``parameters(``
(where every notebook resolves and checks its parameters).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ckd_lib import results
from ckd_lib.errors import UserError, one_line

# A cell that trains calls one of these (the notebooks' training entry points).
TRAINING_CALL = re.compile(r"\b(train|prepare_teachers|launch|run_detection)\(")
# Every notebook's first code cell resolves its parameters with this call (docs/CONTRACTS.md).
PARAMETERS_CALL = re.compile(r"\bparameters\(")
PLAN_FORMAT = 1


class PlanError(UserError):
    """A notebook could not be planned; the message names the notebook and the cause."""


@dataclass
class Unit:
    """What one job trains: a group of runs sharing a teacher and a data stream (classification,
    one ``engine.train`` call) or one detection run, on ``processes`` torch.distributed processes
    (1, or the notebook's ``nproc_per_node``)."""

    notebook: str
    task: str  # "classification" or "detection"
    configs: list[dict]
    runs: list[dict]  # per config: run_id, config_hash, out_dir, teacher_checkpoint
    processes: int = 1

    @property
    def key(self) -> str:
        """Names the unit in the job book: the same runs are the same unit in a later plan."""
        ids = "|".join(run["run_id"] for run in self.runs)
        return hashlib.sha256(ids.encode()).hexdigest()[:16]

    @property
    def run_ids(self) -> list[str]:
        return [run["run_id"] for run in self.runs]

    def outputs(self) -> list[str]:
        return [model_path(run["out_dir"], run["run_id"]) for run in self.runs]


@dataclass
class Plan:
    """The units of a profile, in the order the notebooks define them."""

    profile: str
    units: list[Unit] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)

    def producers(self) -> dict[str, str]:
        """``model_last.pth`` path -> key of the unit that writes it."""
        return {path: unit.key for unit in self.units for path in unit.outputs()}

    def dependencies(self, unit: Unit) -> list[str]:
        """Keys of the units that train this unit's teachers (the teachers notebook's runs,
        or a COCO teacher trained in the same notebook)."""
        producers = self.producers()
        keys = [producers.get(run["teacher_checkpoint"] or "") for run in unit.runs]
        return sorted({k for k in keys if k and k != unit.key})

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "profile": self.profile, "notebooks": self.notebooks,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "units": [dataclasses.asdict(u) for u in self.units]}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(profile=data["profile"], notebooks=list(data.get("notebooks", [])),
                   units=[Unit(**u) for u in data["units"]])

    def save(self, path: Path) -> Path:
        results.atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> Plan | None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cls.from_json(data) if data.get("format") == PLAN_FORMAT else None


def model_path(out_dir: str, run_id: str) -> str:
    """Where a run leaves its weights (a student's ``teacher_checkpoint`` when it teaches)."""
    return str(Path(out_dir) / run_id / results.MODEL_NAME)


# -- the collector the entry points talk to ---------------------------------------------------
class Collector:
    def __init__(self, profile: str):
        self.plan = Plan(profile)
        self.notebook = ""
        self.seen: set[str] = set()
        self.teachers: dict[tuple[str, str], str] = {}  # (dataset, model) -> checkpoint


_ACTIVE: list[Collector] = []


def active() -> bool:
    """True while a plan is being collected: the training entry points record, not train."""
    return bool(_ACTIVE)


@contextlib.contextmanager
def collecting(profile: str):
    collector = Collector(profile)
    _ACTIVE.append(collector)
    try:
        yield collector
    finally:
        _ACTIVE.remove(collector)


def record(groups, task: str = "classification", processes: int = 1) -> list:
    """Plan ``groups`` (lists of configs trained together); returns ``[]`` (no records)."""
    collector = _ACTIVE[-1]
    for group in groups:
        fresh = []
        for config in group:
            run_id = config.run_id()
            if run_id not in collector.seen:
                collector.seen.add(run_id)
                _validate(config, collector)
                fresh.append(config)
        if not fresh:
            continue
        runs = [{"run_id": c.run_id(), "config_hash": c.config_hash(), "out_dir": str(c.out_dir),
                 "teacher_checkpoint": c.teacher_checkpoint} for c in fresh]
        collector.plan.units.append(Unit(collector.notebook, task, [c.to_dict() for c in fresh],
                                         runs, int(processes)))
    return []


def _validate(config, collector: Collector) -> None:
    """The config's own checks, with a teacher checkpoint that a planned run will write counted
    as present (it does not exist yet)."""
    planned = collector.plan.producers()
    checkpoint = config.teacher_checkpoint
    if not checkpoint or checkpoint not in planned or Path(checkpoint).is_file():
        config.validate()
    elif getattr(config, "TASK", "") == "detection":
        config.validate(check_files=False)
    else:
        dataclasses.replace(config, teacher_checkpoint="untrained").validate()


def add_teachers(entries: list[dict]) -> None:
    """The teacher index a teachers notebook would write: ``{dataset, model, checkpoint}``."""
    for entry in entries:
        _ACTIVE[-1].teachers[(entry["dataset"], entry["model"])] = entry["checkpoint"]


def planned_teacher(dataset: str, model: str) -> str | None:
    """The checkpoint a planned (or loaded) teacher has or will have; None outside plan mode."""
    return _ACTIVE[-1].teachers.get((dataset, model)) if _ACTIVE else None


# -- executing the notebooks ---------------------------------------------------------------------
def collect(runner, only: list[str] | None = None, check: bool = False) -> Plan:
    """The plan of ``runner``'s profile (every notebook, or ``only`` these), in notebook order;
    with ``check``, also the parameters cell of each notebook that trains nothing.

    Raises :class:`PlanError` naming the notebook and cell when a notebook's code fails."""
    from ckd_lib.study.params import read_notebook

    os.environ.setdefault("MPLBACKEND", "Agg")
    jobs = runner.plan(only)
    with collecting(runner.profile.name) as collector:
        for job in jobs:
            collector.notebook = job.name
            cells = [(("parameters" in cell.metadata.get("tags", [])), cell.source)
                     for cell in read_notebook(job.source).cells if cell.cell_type == "code"]
            last = max((i for i, (_, code) in enumerate(cells) if TRAINING_CALL.search(code)),
                       default=-1)
            if last >= 0:
                collector.plan.notebooks.append(job.name)
            elif check:
                last = next((i for i, (tagged, code) in enumerate(cells)
                             if not tagged and PARAMETERS_CALL.search(code)), -1)
            if last < 0:
                continue
            _execute(job, cells[:last + 1], "checking" if check else "planning")
    return collector.plan


def _execute(job, cells: list[tuple[bool, str]], doing: str = "planning") -> None:
    """Run ``cells`` as papermill would (the runner's parameters right after the parameters
    cell), their output captured and shown only with an error."""
    namespace: dict = {"__name__": "__main__"}
    output = io.StringIO()
    for index, (is_parameters, code) in enumerate(cells, 1):
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                exec(compile(code, f"{job.name}.py (cell {index})", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - named with its notebook, re-raised below
            # a user's error says all in its line; the output before a bug's helps find it
            tail = "" if isinstance(error, UserError) else \
                "\n".join(output.getvalue().strip().splitlines()[-5:])
            what = one_line(error) if isinstance(error, UserError) else \
                f"{type(error).__name__}: {one_line(error)}"
            raise PlanError(f"{doing} notebook {job.name}, code cell {index}: {what}"
                            + (f"\n{tail}" if tail else "")) from error
        if is_parameters:
            namespace.update(copy.deepcopy(job.parameters))
