"""Published numbers beside ours: the project's literature.csv and the user's paper_numbers.csv.

literature.csv (shipped in ``ckd_lib/resources``) holds the baselines' published accuracies, each
row with its source. Its ``teacher`` and ``student`` rows are the vanilla accuracies of the teacher
and of the student trained alone. mdistiller reports the best test accuracy over epochs (mean of 5
runs); RepDistiller the last epoch: the basis is read from the source text and shown with the
number.

The CKD paper's own table values are not in this repository. A user may supply them in
``results/paper_numbers.csv`` (columns dataset,teacher,student,method,top1,source); until that file
exists every such cell reads "not supplied". ``results/paper_numbers.template.csv`` lists every cell
of the paper's tables this study runs with an empty top1 (:func:`paper_numbers_template` writes
it): copy it and fill in the numbers; a row left empty is skipped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ckd_lib.data.catalog import dataset_base

LITERATURE_FILE = "literature.csv"
PAPER_COLUMNS = ("dataset", "teacher", "student", "method", "top1", "source")
NOT_SUPPLIED = "not supplied"
NOT_IN_FILE = "not in paper_numbers.csv"

# Our method names -> the names the published tables use for the same cell.
METHOD_ALIASES = {
    "CE": ("student", "CE"),
    "teacher": ("teacher",),
}


def basis_of(source: str) -> str:
    """Which epoch a published number is taken at, as its source says."""
    text = source.lower()
    if "best-epoch" in text or "best epoch" in text:
        return "best epoch"
    if "last-epoch" in text or "last epoch" in text:
        return "last epoch"
    return "epoch basis not stated"


@dataclass(frozen=True)
class PublishedNumber:
    """One published top-1 accuracy with where it comes from."""

    top1: float
    source: str
    basis: str
    note: str = ""

    def short(self) -> str:
        return f"{self.top1:.2f}"


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def load_literature(path: str | Path | None = None) -> list[dict]:
    """Rows of literature.csv (the packaged copy unless `path` is given), top1 as float."""
    if path is None:
        text = resources.files("ckd_lib.resources").joinpath(LITERATURE_FILE).read_text()
    else:
        text = Path(path).read_text()
    rows = []
    for row in csv.DictReader(text.splitlines()):
        top1 = _float(row.get("top1", ""))
        if top1 is None:
            continue
        rows.append({**row, "top1": top1})
    return rows


def _method_names(method: str) -> tuple[str, ...]:
    return METHOD_ALIASES.get(method, (method,))


def match_literature(rows: list[dict], dataset: str, teacher: str | None, student: str,
                     method: str) -> list[PublishedNumber]:
    """Published numbers of one cell: same dataset (without parameters), pair and method.

    `method` is ours ("CE" matches the published "student" rows, "teacher" the teacher rows).
    """
    base = dataset_base(dataset)
    names = _method_names(method)
    hits = []
    for row in rows:
        if row["dataset"] != base or row["student"] != student or row["method"] not in names:
            continue
        if (row.get("teacher") or None) != teacher:
            continue
        hits.append(PublishedNumber(row["top1"], row["source"], basis_of(row["source"]),
                                    row.get("note", "") or ""))
    return hits


def literature_for_pair(rows: list[dict], dataset: str, teacher: str | None,
                        student: str) -> list[dict]:
    """Every published row of one pair (all methods), for the table of published numbers."""
    base = dataset_base(dataset)
    return [row for row in rows if row["dataset"] == base and row["student"] == student
            and (row.get("teacher") or None) == teacher]


class PaperNumbers:
    """The CKD paper's own numbers from the user's CSV; 'not supplied' until the file exists."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.rows: list[dict] = []
        self.error: str | None = None
        self.supplied = bool(self.path and self.path.is_file())
        if not self.supplied:
            return
        try:
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in PAPER_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValueError(f"lacks column(s) {missing}; expected {list(PAPER_COLUMNS)}")
                for line, row in enumerate(reader, start=2):
                    if not (row["top1"] or "").strip():
                        continue  # a template row not filled in
                    top1 = _float(row["top1"])
                    if top1 is None:
                        raise ValueError(f"line {line}: top1={row['top1']!r} is not a number")
                    self.rows.append({**row, "top1": top1})
        except (OSError, ValueError, csv.Error) as exc:
            self.error = f"{self.path}: {exc}"
            self.rows = []
            self.supplied = False

    def lookup(self, dataset: str, teacher: str | None, student: str,
               method: str) -> PublishedNumber | str:
        """The paper's number of one cell, or the reason there is none (a string)."""
        if not self.supplied:
            return NOT_SUPPLIED
        names = _method_names(method)
        base = dataset_base(dataset)
        for row in self.rows:
            if row["dataset"] not in (dataset, base) or row["student"] != student:
                continue
            if row["method"] not in names:
                continue
            row_teacher = row.get("teacher") or None
            if row_teacher is not None and row_teacher != teacher:
                continue
            return PublishedNumber(row["top1"], row["source"] or str(self.path),
                                   basis_of(row["source"] or ""))
        return NOT_IN_FILE


TEMPLATE_METHODS = ("teacher", "CE", "KD", "DKD", "CKD")
TEMPLATE_SOURCES = {
    "cifar100": "CKD paper (arXiv 2404.14109v2), CIFAR-100 table",
    "imagenet": "CKD paper (arXiv 2404.14109v2), ImageNet-1K table",
}


def paper_numbers_template() -> str:
    """The CSV of every cell of the paper's classification tables that this study runs (each
    pair of the recipes, the teacher, the student alone and KD, DKD, CKD), top1 left empty."""
    import io

    from ckd_lib.recipes import pairs

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAPER_COLUMNS)
    for dataset, source in TEMPLATE_SOURCES.items():
        for teacher, student in pairs(dataset):
            for method in TEMPLATE_METHODS:
                writer.writerow([dataset, teacher, student, method, "", source])
    return out.getvalue()


class SourceIndex:
    """Numbers the sources of published values in the order they are first cited."""

    def __init__(self):
        self.sources: dict[str, int] = {}

    def ref(self, source: str) -> int:
        if source not in self.sources:
            self.sources[source] = len(self.sources) + 1
        return self.sources[source]

    def items(self) -> list[tuple[int, str, str]]:
        return [(number, source, basis_of(source)) for source, number in self.sources.items()]
