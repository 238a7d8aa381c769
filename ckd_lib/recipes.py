"""The published training recipes, read from the project's copy of ``recipes.csv``.

Every number a run uses by default comes from this table, and each row names its source, so a
reader can check a recipe against the paper's code without opening this module.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

from ckd_lib.errors import InputError

RECIPES_FILE = "recipes.csv"
# Rows the sources imply but do not publish as configs (each says so in its source column).
DERIVED_FILE = "recipes_derived.csv"


@dataclass(frozen=True)
class Recipe:
    """One row of recipes.csv, parsed: the schedule string becomes a kind plus milestones."""

    dataset: str
    teacher: str | None
    student: str
    method: str
    epochs: int | None
    schedule: str  # "cosine" or "step"
    milestones: tuple[int, ...]
    lr_decay: float
    lr: float
    batch_size: int
    weight_decay: float
    loss_params: dict = field(default_factory=dict)
    source: str = ""
    schedule_text: str = ""
    # The method whose row this recipe borrows (a method registered with recipe_from), and the
    # loss values of that row it did not pass on (the borrowing method's defaults stand).
    borrowed_from: str | None = None
    not_passed: dict = field(default_factory=dict)

    def borrowing(self) -> str:
        """One line saying what a borrowed recipe took from its lender's row, and what not:
        what ``--print-config`` shows (empty for a method's own recipe)."""
        if not self.borrowed_from:
            return ""
        def values(d):
            return ", ".join(f"{k}={v}" for k, v in d.items()) or "none"
        return (f"{self.method} borrows {self.borrowed_from}'s recipe of "
                f"{self.teacher}->{self.student} ({self.borrowed_from}'s source: "
                f"{self.source.split(': ', 1)[-1]}): epochs, schedule, lr, batch, weight decay; "
                f"loss values passed on (its recipe_params): {values(self.loss_params)}; "
                f"not passed ({self.method}'s defaults stand): {values(self.not_passed)}")


_STEP = re.compile(r"^step_x(?P<decay>[0-9.]+)_at_(?P<ms>[0-9_]+)$")


def parse_schedule(text: str) -> tuple[str, tuple[int, ...], float]:
    """Turn the CSV's schedule text into (kind, milestones, decay).

    ``cosine_to_0_per_epoch`` is cosine annealing to zero stepped once per epoch (the CKD code);
    ``step_x0.1_at_150_180_210`` multiplies the lr by 0.1 at each listed epoch (mdistiller).
    Iteration-based detection schedules keep their text and kind ``"iterations"``.
    """
    if text == "cosine_to_0_per_epoch":
        return "cosine", (), 0.0
    match = _STEP.match(text)
    if match:
        milestones = tuple(int(m) for m in match.group("ms").split("_") if m)
        return "step", milestones, float(match.group("decay"))
    if "iters" in text:
        return "iterations", (), 0.1
    raise InputError(f"unknown schedule {text!r} in {RECIPES_FILE}")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_loss_params(text: str) -> dict:
    """``"ce_weight=1.0;cl_weight=10"`` -> ``{"ce_weight": 1.0, "cl_weight": 10}``."""
    params = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, _, value = item.partition("=")
        params[key.strip()] = _parse_value(value.strip())
    return params


@cache
def all_recipes() -> tuple[Recipe, ...]:
    """Every recipe of the project's recipes.csv, then the derived rows, in file order."""
    folder = resources.files("ckd_lib.resources")
    lines = []
    for name in (RECIPES_FILE, DERIVED_FILE):
        lines += list(csv.DictReader(folder.joinpath(name).read_text().splitlines()))
    rows = []
    for row in lines:
        kind, milestones, decay = parse_schedule(row["schedule"])
        method = row["method"]
        teacher = row["teacher"] or None
        if method == "teacher":  # teacher rows are the CE recipe of the teacher itself
            teacher = None
        rows.append(
            Recipe(
                dataset=row["dataset"],
                teacher=teacher,
                student=row["student"],
                method="teacher" if method == "teacher" else method,
                epochs=int(row["epochs"]) if row["epochs"] else None,
                schedule=kind,
                milestones=milestones,
                lr_decay=decay,
                lr=float(row["lr"]),
                batch_size=int(row["batch"]),
                weight_decay=float(row["weight_decay"]),
                loss_params=parse_loss_params(row["loss_params"]),
                source=row["source"],
                schedule_text=row["schedule"],
            )
        )
    return tuple(rows)


def task_of(dataset: str) -> str:
    """The method registry's task of a recipe dataset."""
    return "detection" if dataset == "coco" else "classification"


def get_recipe(dataset: str, teacher: str | None, student: str, method: str) -> Recipe:
    """The published recipe of one table cell.

    Teacher training is ``get_recipe(dataset, None, "resnet56", "teacher")`` (or method ``"CE"``
    with no teacher). A method with no row of its own borrows the row of the method its
    registration names (``recipe_from``; see :func:`borrow`); explicit rows win. An unknown cell
    raises a ValueError that lists what the table does hold.
    """
    recipes = all_recipes()
    if method in ("teacher", "CE") and teacher is None:
        hits = [r for r in recipes if r.dataset == dataset and r.method == "teacher"
                and r.student == student]
    else:
        hits = [r for r in recipes if r.dataset == dataset and r.teacher == teacher
                and r.student == student and r.method == method]
    if hits:
        return hits[0]
    datasets = sorted({r.dataset for r in recipes})
    if dataset not in datasets:
        raise InputError(f"no recipes for dataset {dataset!r}; datasets with recipes: {datasets}")
    if method not in ("teacher", "CE"):
        from ckd_lib.methods import get_method

        try:
            spec = get_method(method, task_of(dataset))
        except InputError:  # not a method at all: the cells below say what exists
            spec = None
        if spec is not None and spec.recipe_from and spec.recipe_from != method:
            return borrow(get_recipe(dataset, teacher, student, spec.recipe_from), method)
        if spec is not None and not any(r.method == method for r in recipes):
            where = f" ({spec.source})" if spec.source != "ckd_lib" else ""
            raise InputError(
                f"method {method}{where} has no recipe and borrows none, so no cell of "
                f"{dataset} can run it ({teacher}->{student}); register it with "
                "recipe_from='CKD' (or another method with recipes), or add its rows to "
                "recipes.csv")
    cells = sorted({f"{r.teacher}->{r.student}:{r.method}" for r in recipes
                    if r.dataset == dataset})
    raise InputError(
        f"no recipe for {dataset} {teacher}->{student} method {method!r}; "
        f"cells with recipes on {dataset}: {cells}"
    )


def borrow(base: Recipe, method: str) -> Recipe:
    """``base`` (another method's row) as the recipe of ``method``: its epochs, schedule, lr,
    batch and weight decay, and of its loss values only those the method names in its
    registration's ``recipe_params`` (KD+CKD takes CKD's per-pair cl_weight and temperature,
    not its CE weight of 1.0). Every other loss parameter keeps the method's own default, the
    same for every pair: a rule written down, not inferred from equal defaults."""
    from ckd_lib.methods import get_method

    spec = get_method(method, task_of(base.dataset))
    loss = {k: v for k, v in base.loss_params.items() if k in spec.recipe_params}
    rest = {k: v for k, v in base.loss_params.items() if k not in loss}
    return replace(base, method=method, loss_params=loss, borrowed_from=base.method,
                   not_passed=rest, source=f"{base.method} recipe, borrowed by {method}: "
                                           f"{base.source}")


def pairs(dataset: str = "cifar100", method: str = "CKD") -> list[tuple[str, str]]:
    """The (teacher, student) pairs that have a recipe for ``method``, in table order."""
    return [(r.teacher, r.student) for r in all_recipes()
            if r.dataset == dataset and r.method == method]
