"""The report's tables, in the paper's layout, computed from run records only.

A *cell* is one configuration (one method on one pair, one schedule, one set of loss
parameters) and the runs that are its seeds. For each cell the report gives the mean ± sample std
(ddof=1) over seeds of the best-epoch and of the last-epoch test top-1, the value of every seed, n,
the best epochs, its budget (epochs, schedule, optimizer steps and images seen: :class:`Budget`)
and the run ids with the paths of their records. Beside it: the published numbers of the same cell
with their source (literature.csv) and the CKD paper's own number (paper_numbers.csv,
user-supplied), each with its tier (``ckd_lib.report.stats.tier``).

A difference between two cells (:class:`Delta`) is seed-paired with a 95 % t interval
(``ckd_lib.report.stats``) and says whether the two were trained at an equal budget in optimizer
steps and images; the matched-budget table groups runs by that budget, not by epochs.

Tables:
- main tables (one per dataset and kind: same-architecture and cross-architecture pairs): rows are
  teacher→student pairs, columns the teacher, the student alone (CE) and the methods; then the
  difference of CKD to the teacher, to the student alone and to KD;
- teachers: each teacher checkpoint the runs used, its measured accuracy and its own training run;
- ablations and other configurations: grouped by label and loss parameters;
- matched budget: every (epochs, schedule) budget a pair was run at, methods side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ckd_lib.report.collect import Study, is_same_architecture, pretty_dataset
from ckd_lib.report.literature import (
    NOT_SUPPLIED,
    PublishedNumber,
    match_literature,
)
from ckd_lib.report.palette import method_rank, pair_label
from ckd_lib.report.stats import Interval, Tier, interval, paired, tier

REFERENCE_METHODS = ("teacher", "CE", "KD")


def budget_text(epochs, schedule) -> str:
    """A schedule in the words every table and figure uses, e.g. "480 ep cosine"."""
    return f"{epochs} ep {schedule}"


def _count(value: int) -> str:
    """12,345 -> "12.3k", 2,400,000 -> "2.4M": step and image counts at a glance."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value}"


@dataclass(frozen=True)
class Budget:
    """What a run was given to train: its schedule, and what counts for a fair comparison, the
    optimizer steps and the images seen. Two budgets are equal when steps and images are (the
    schedule may differ: that is what the matched-budget runs change)."""

    steps: int
    images: int
    epochs: int = field(default=0, compare=False)
    schedule: str = field(default="", compare=False)
    batch_size: int = field(default=0, compare=False)

    @property
    def schedule_text(self) -> str:
        return budget_text(self.epochs, self.schedule)

    def parts(self) -> list[str]:
        return [self.schedule_text, f"bs {self.batch_size}", f"{_count(self.steps)} steps",
                f"{_count(self.images)} images"]

    def text(self) -> str:
        """"480 ep cosine · bs 64 · 375k steps · 24M images"."""
        return " · ".join(self.parts())

    def steps_text(self) -> str:
        return f"{_count(self.steps)} steps · {_count(self.images)} images"

    def ratio(self, other: Budget) -> float:
        """Our optimizer steps over ``other``'s."""
        return self.steps / other.steps if other.steps else math.nan

    def __str__(self) -> str:
        return self.text()


def budget_of(runs: pd.DataFrame) -> Budget:
    """The budget of one configuration's runs (they share it; the largest counts if not)."""
    if runs.empty:
        return Budget(0, 0)
    first = runs.iloc[0]
    return Budget(steps=int(runs["iterations"].max()), images=int(runs["images"].max()),
                  epochs=int(first["epochs"]), schedule=str(first["schedule"]),
                  batch_size=int(first["batch_size"]))


def budget_comparison(ours: Budget, theirs: Budget, method: str, ref: str) -> str:
    """"equal budget (375k steps · 24M images)" or "unequal budgets: CKD 2× KD's steps (480 ep
    cosine bs 32 vs 240 ep step bs 64)": the words every Δ of the report carries."""
    if ours == theirs:
        return f"equal budget ({ours.steps_text()})"
    ratio = ours.ratio(theirs)
    times = f"{ratio:.2g}×" if math.isfinite(ratio) else "?×"
    images = "" if ours.images == theirs.images else \
        f", {ours.images / theirs.images:.2g}× the images" if theirs.images else ""
    return (f"unequal budgets: {method} {times} {ref}'s steps{images} ({ours.schedule_text} bs "
            f"{ours.batch_size} vs {theirs.schedule_text} bs {theirs.batch_size})")


@dataclass(frozen=True)
class Delta:
    """One cell minus another: seed-paired differences of best-epoch and last-epoch top-1 with
    their intervals, and whether the two trained at an equal budget (steps and images).
    Against the teacher, whose accuracy is one measured value, each seed minus that value."""

    ref: str
    best: Interval
    last: Interval
    equal_budget: bool | None  # None: against the teacher (no budget of its own)
    words: str = ""  # budget_comparison's text

    def get(self, metric: str) -> Interval:
        return getattr(self, metric)


class Stats(Interval):
    """A cell's values shown as mean ± sample standard deviation (std NaN for fewer than 2):
    an :class:`~ckd_lib.report.stats.Interval` whose text is its spread, not its interval."""

    def __init__(self, values):
        super().__init__(tuple(float(v) for v in values))

    @property
    def std(self) -> float:
        return self.sd

    def text(self, digits: int = 2) -> str:
        if not self.values:
            return "–"
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Cell:
    """One configuration's runs and what is shown beside them."""

    table: str
    dataset: str
    teacher: str | None
    student: str
    method: str
    label: str = ""
    settings: str = ""
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: Stats = field(default_factory=lambda: Stats([]))
    last: Stats = field(default_factory=lambda: Stats([]))
    top5: Stats = field(default_factory=lambda: Stats([]))  # last-epoch top-5
    # teachers: the accuracy each checkpoint scored when the distillation runs evaluated it, and
    # each checkpoint file (path, sha256, stored and measured top-1)
    evaluated: Stats | None = None
    teacher_files: list[dict] = field(default_factory=list)
    literature: list[PublishedNumber] = field(default_factory=list)
    paper: PublishedNumber | str = NOT_SUPPLIED
    deltas: dict[str, Delta] = field(default_factory=dict)
    note: str = ""
    budget: Budget = field(default_factory=lambda: Budget(0, 0))
    # runs of a seed the cell already counts (e.g. re-run after a code change altered the
    # config hash): shown with the cell, never averaged in
    duplicates: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n(self) -> int:
        return self.evaluated.n if self.method == "teacher" and self.evaluated is not None \
            and self.best.n == 0 else self.best.n

    @property
    def seeds(self) -> list:
        return sorted(self.runs["seed"].tolist()) if not self.runs.empty else []

    @property
    def run_ids(self) -> list[str]:
        return self.runs["run_id"].tolist() if not self.runs.empty else []

    @property
    def links(self) -> list[str]:
        return self.runs["link"].tolist() if not self.runs.empty else []

    @property
    def best_epochs(self) -> list:
        return self.runs["best_epoch"].tolist() if not self.runs.empty else []

    def per_seed(self, metric: str) -> dict:
        """seed -> value of ``metric`` ("best" or "last" top-1) of each counted run."""
        if self.runs.empty:
            return {}
        return {int(seed): float(value) for seed, value in
                zip(self.runs["seed"], self.runs[f"{metric}_top1"], strict=True)}

    def tier(self, published: PublishedNumber) -> Tier | None:
        """Our mean against a published number, like with like: best-epoch values against a
        best-epoch number, last-epoch against last-epoch (a basis not stated: best, as
        mdistiller and the CKD code report)."""
        metric = "last" if published.basis == "last epoch" else "best"
        return tier(getattr(self, metric).values, published.top1)

    def reference_value(self, metric: str) -> float:
        """The value differences are taken against: the teacher's measured accuracy, else the
        mean of `metric` ("best" or "last")."""
        if self.method == "teacher" and self.evaluated is not None and self.evaluated.n:
            return self.evaluated.mean
        return getattr(self, metric).mean


def _hash_is_current(record: dict) -> bool:
    """Whether the record's config hash is what this code computes for its config."""
    from ckd_lib.config import RunConfig

    try:
        return RunConfig.from_dict(dict(record["config"])).config_hash() == \
            record.get("config_hash")
    except Exception:  # a config this code no longer reads
        return False


def split_duplicates(runs: pd.DataFrame, study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run per seed: where a configuration has several runs of the same seed (and init
    seed), keep the one whose config hash the current code computes, else the newest record."""
    seeds = runs[["seed", "init_seed"]].astype(str).agg("/".join, axis=1)
    if seeds.is_unique:
        return runs, runs.iloc[0:0]
    ranked = runs.assign(
        _seed=seeds, _current=[_hash_is_current(study.by_id[r]) if r in study.by_id else False
                               for r in runs["run_id"]])
    ranked = ranked.sort_values(["_current", "written", "run_id"], ascending=False)
    kept = ranked.drop_duplicates(subset=["_seed"], keep="first")
    dropped = ranked[~ranked.index.isin(kept.index)]
    return (kept.drop(columns=["_seed", "_current"]),
            dropped.drop(columns=["_seed", "_current"]))


def make_cell(table: str, runs: pd.DataFrame, study: Study, method: str | None = None,
              teacher: str | None = None) -> Cell:
    first = runs.iloc[0]
    method = method or first["method"]
    teacher = teacher if teacher is not None else first["teacher"]
    runs, duplicates = split_duplicates(runs, study)
    runs = runs.sort_values(["seed", "run_id"])
    cell = Cell(table=table, dataset=first["dataset"], teacher=teacher, student=first["student"],
                method=method, label=first["label"], settings=first["settings"], runs=runs,
                best=Stats([float(v) for v in runs["best_top1"]]),
                last=Stats([float(v) for v in runs["last_top1"]]),
                top5=Stats([float(v) for v in runs["last_top5"] if v is not None]),
                budget=budget_of(runs), duplicates=duplicates)
    if not duplicates.empty:
        cell.note = (f"{len(duplicates)} more run(s) of a seed already counted (same settings, "
                     "another config hash, e.g. the code changed in between): not counted.")
    attach_published(cell, study)
    return cell


def attach_published(cell: Cell, study: Study) -> None:
    cell.literature = match_literature(study.literature, cell.dataset, cell.teacher,
                                       cell.student, cell.method)
    cell.paper = study.paper.lookup(cell.dataset, cell.teacher, cell.student, cell.method)


# -- choosing the configuration of a cell --------------------------------------------------------
def _recipe(dataset: str, teacher: str | None, student: str, method: str):
    from ckd_lib.recipes import get_recipe

    try:
        return get_recipe(dataset, teacher, student, method)
    except ValueError:
        return None


def recipe_budget(method: str, dataset: str = "cifar100") -> str:
    """The published recipes' epochs and schedule of a method, e.g. "480 epochs, cosine"."""
    from ckd_lib.recipes import all_recipes

    kinds = sorted({(r.epochs, r.schedule) for r in all_recipes()
                    if r.dataset == dataset and r.method == method and r.epochs})
    return " or ".join(f"{e} epochs, {k}" for e, k in kinds) or "no recipe"


def _usual_schedule(method: str) -> str | None:
    """The schedule kind the published CIFAR-100 recipes give `method` (cosine for CKD)."""
    from ckd_lib.recipes import all_recipes

    kinds = {r.schedule for r in all_recipes() if r.dataset == "cifar100" and r.method == method}
    return kinds.pop() if len(kinds) == 1 else None


def choose_configuration(runs: pd.DataFrame, prefer_budget: tuple | None = None
                         ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Split `runs` (one cell's candidates) into configurations; return the chosen one and the rest.

    Preference: a requested (epochs, schedule) budget, then the most seeds, then the published
    recipe's epochs and schedule, then the method's usual schedule kind, then the fewer epochs.
    """
    groups = [g for _, g in runs.groupby("config_key", sort=True)]
    if len(groups) == 1:
        return groups[0], []

    def score(g: pd.DataFrame):
        first = g.iloc[0]
        budget = (first["epochs"], first["schedule"])
        recipe = _recipe(first["dataset_base"], first["teacher"], first["student"],
                         first["method"])
        recipe_hit = recipe is not None and (recipe.epochs, recipe.schedule) == budget
        usual = _usual_schedule(first["method"]) == first["schedule"]
        return (prefer_budget is not None and budget == prefer_budget, len(g), recipe_hit, usual,
                -int(first["epochs"] or 0))

    ranked = sorted(groups, key=score, reverse=True)
    return ranked[0], ranked[1:]


# -- main tables -----------------------------------------------------------------------------------
@dataclass
class PairRow:
    dataset: str
    teacher: str
    student: str
    cells: dict[str, Cell]
    deltas: dict[str, Delta] = field(default_factory=dict)
    budget: Budget | None = None  # matched-budget rows: the one budget of the row
    # the same pair's rows of the matched-budget table: its methods compared at equal budgets
    matched: list[PairRow] = field(default_factory=list)

    @property
    def pair(self) -> str:
        return pair_label(self.teacher, self.student)


@dataclass
class Table:
    key: str
    title: str
    kind: str  # main | teachers | ablations | budget
    dataset: str
    description: str
    rows: list = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        out = []
        for row in self.rows:
            if isinstance(row, PairRow):
                out.extend(row.cells.values())
            elif isinstance(row, Cell):
                out.append(row)
        return out

    def run_ids(self) -> set[str]:
        """Every run the table shows, counted or shown as a duplicate."""
        return {rid for cell in self.cells()
                for rid in [*cell.run_ids, *cell.duplicates.get("run_id", [])]}


def ordered_pairs(dataset: str, pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs in the paper's order where the recipes list them, the others after, by name."""
    from ckd_lib.recipes import pairs as recipe_pairs

    order = {p: i for i, p in enumerate(recipe_pairs(dataset))}
    return sorted(pairs, key=lambda p: (order.get(p, len(order)), p))


def teacher_cell(study: Study, dataset: str, teacher: str, distill_runs: pd.DataFrame,
                 table: str) -> Cell:
    """The teacher column: its own training runs when the records hold them, and the accuracy
    the distillation runs measured for each distinct checkpoint."""
    frame = study.frame
    checkpoints = distill_runs.drop_duplicates(subset=["teacher_identity"])
    evaluated = Stats([float(v) for v in checkpoints["teacher_top1"].dropna()])
    own_ids = {Path(str(c)).parent.name for c in checkpoints["teacher_checkpoint"].dropna()}
    own = frame[frame["run_id"].isin(own_ids)]
    if own.empty:
        # no training run to point to: the cell points to the runs that evaluated the teacher
        runs = checkpoints
        cell = Cell(table=table, dataset=dataset, teacher=teacher, student=teacher,
                    method="teacher", runs=runs, evaluated=evaluated,
                    settings="; ".join(sorted({str(c) for c in checkpoints["teacher_checkpoint"]})))
        cell.note = "checkpoint evaluated by the distillation runs (its training run is not " \
                    "in the records)."
    else:
        cell = make_cell(table, own, study, method="teacher", teacher=teacher)
        cell.student = teacher
        cell.evaluated = evaluated
    cell.teacher = teacher
    cell.teacher_files = [
        {"checkpoint": r.teacher_checkpoint, "sha256": r.teacher_sha256,
         "stored": r.teacher_stored_accuracy, "measured": r.teacher_top1}
        for r in checkpoints.itertuples()]
    if (checkpoints["teacher_checkpoint"] == "untrained").any():
        cell.note = " ".join(filter(None, [cell.note, "UNTRAINED teacher (random weights; for "
                                           "tests and benchmarks only)."]))
    # published teacher rows are keyed by the pair they head
    students = sorted(set(distill_runs["student"]))
    cell.literature = []
    for student in students:
        for hit in match_literature(study.literature, dataset, teacher, student, "teacher"):
            if hit not in cell.literature:
                cell.literature.append(hit)
    cell.paper = study.paper.lookup(dataset, teacher, students[0], "teacher") if students \
        else NOT_SUPPLIED
    return cell


def delta(cell: Cell, other: Cell, ref: str) -> Delta | None:
    """``cell`` minus ``other`` (see :class:`Delta`); None when either has no values."""
    if ref == "teacher":
        value = other.reference_value("best")
        if value is None or math.isnan(value) or not cell.best.n:
            return None
        return Delta(ref, interval([v - value for v in cell.per_seed("best").values()],
                                   list(cell.per_seed("best"))),
                     interval([v - value for v in cell.per_seed("last").values()],
                              list(cell.per_seed("last"))), None)
    best, last = paired(cell.per_seed("best"), other.per_seed("best")), \
        paired(cell.per_seed("last"), other.per_seed("last"))
    if not best.n:
        return None
    return Delta(ref, best, last, cell.budget == other.budget,
                 budget_comparison(cell.budget, other.budget, cell.method, ref))


def compute_deltas(row: PairRow) -> None:
    """Difference of every distillation method to the teacher, to the student alone and to KD:
    seed-paired, best-epoch and last-epoch, each with its budget comparison."""
    for method, cell in row.cells.items():
        if method in ("teacher", "CE"):
            continue
        deltas = {}
        for ref in REFERENCE_METHODS:
            other = row.cells.get(ref)
            if other is None or other is cell:
                continue
            d = delta(cell, other, ref)
            if d is not None:
                deltas[ref] = d
        cell.deltas = deltas
    row.deltas = row.cells["CKD"].deltas if "CKD" in row.cells else {}


def main_tables(study: Study) -> tuple[list[Table], list[Cell]]:
    """The paper-layout tables of every dataset in the records, and the configurations they
    leave out (listed with the ablations)."""
    frame = study.frame
    if frame.empty:
        return [], []
    tables: list[Table] = []
    leftovers: list[Cell] = []
    main = frame[frame["section"] == "main"]
    for dataset in sorted(set(frame["dataset"])):
        runs = main[main["dataset"] == dataset]
        distill = runs[runs["method"] != "CE"]
        pairs = set(zip(distill["teacher"], distill["student"], strict=False))
        if not pairs:
            continue
        kinds = {"same": [], "cross": []}
        for pair in ordered_pairs(dataset, pairs):
            kinds["same" if is_same_architecture(*pair) else "cross"].append(pair)
        for kind, pair_list in kinds.items():
            if not pair_list:
                continue
            key = f"{dataset}:{kind}"
            title = (f"{pretty_dataset(dataset)}: "
                     f"{'same-architecture' if kind == 'same' else 'cross-architecture'} pairs")
            table = Table(key=key, title=title, kind="main", dataset=dataset,
                          description=("Rows: teacher→student pairs. Columns: the teacher, the "
                                       "student trained alone (CE), the distillation methods, and "
                                       "the difference of CKD to the teacher, to the student alone "
                                       "and to KD."))
            methods: set[str] = set()
            for teacher, student in pair_list:
                row, extra = pair_row(study, runs, dataset, teacher, student, key)
                leftovers.extend(extra)
                table.rows.append(row)
                methods.update(m for m in row.cells if m not in ("teacher", "CE"))
            table.methods = sorted(methods, key=method_rank)
            tables.append(table)
    return tables, leftovers


def pair_row(study: Study, runs: pd.DataFrame, dataset: str, teacher: str, student: str,
             table_key: str) -> tuple[PairRow, list[Cell]]:
    pair_runs = runs[(runs["teacher"] == teacher) & (runs["student"] == student)]
    cells: dict[str, Cell] = {}
    leftovers: list[Cell] = []
    cells["teacher"] = teacher_cell(study, dataset, teacher, pair_runs, table_key)
    kd_budget = None
    for method in sorted(set(pair_runs["method"]), key=method_rank):
        chosen, rest = choose_configuration(pair_runs[pair_runs["method"] == method])
        cells[method] = make_cell(table_key, chosen, study)
        if method == "KD":
            kd_budget = (chosen.iloc[0]["epochs"], chosen.iloc[0]["schedule"])
        for group in rest:
            leftovers.append(make_cell("other", group, study))
        if rest:
            cells[method].note = " ".join(filter(None, [
                cells[method].note, f"{len(rest)} other configuration(s) of this cell are "
                "listed under 'Ablations and other configurations'."]))
    ce_runs = runs[(runs["method"] == "CE") & (runs["student"] == student)]
    if not ce_runs.empty:
        chosen, _ = choose_configuration(ce_runs, prefer_budget=kd_budget)
        ce = make_cell(table_key, chosen, study, method="CE", teacher=teacher)
        cells["CE"] = ce
    ordered = dict(sorted(cells.items(), key=lambda kv: (kv[0] != "teacher", method_rank(kv[0]))))
    row = PairRow(dataset=dataset, teacher=teacher, student=student, cells=ordered)
    compute_deltas(row)
    return row, leftovers


def unused_ce_cells(study: Study, tables: list[Table]) -> list[Cell]:
    """CE configurations no main-table cell shows (listed with the other configurations)."""
    shown = {rid for t in tables for rid in t.run_ids()}
    frame = study.frame
    ce = frame[(frame["method"] == "CE") & (frame["section"] == "main")
               & ~frame["run_id"].isin(shown)]
    return [make_cell("other", g, study) for _, g in ce.groupby("config_key", sort=True)]


# -- teachers ------------------------------------------------------------------------------------
def teachers_table(study: Study) -> Table:
    """Every teacher checkpoint the distillation runs used, with its measured accuracy."""
    frame = study.frame
    table = Table(key="teachers", title="Teachers", kind="teachers", dataset="",
                  description=("Each teacher checkpoint the distillation runs used: the top-1 the "
                               "engine measured on the test set before distilling, the accuracy "
                               "stored in the checkpoint, and the teacher's own training run where "
                               "the records hold it."))
    if frame.empty:
        return table
    distill = frame[frame["method"] != "CE"]
    for (dataset, teacher), runs in distill.groupby(["dataset", "teacher"], sort=True):
        table.rows.append(teacher_cell(study, dataset, teacher, runs, "teachers"))
    teacher_runs = frame[(frame["section"] == "teacher")]
    listed = {rid for c in table.rows for rid in c.run_ids}
    for _, group in teacher_runs[~teacher_runs["run_id"].isin(listed)].groupby("config_key"):
        cell = make_cell("teachers", group, study, method="teacher", teacher=None)
        cell.teacher = group.iloc[0]["student"]
        cell.note = "teacher training run not used by any distillation run"
        table.rows.append(cell)
    return table


# -- ablations -----------------------------------------------------------------------------------
def ablations_table(study: Study, main: list[Table], leftovers: list[Cell]) -> Table:
    """Runs labelled as ablations, grouped by label and loss parameters, and every configuration
    the main tables do not show; each with its difference to the main cell of the same method."""
    frame = study.frame
    table = Table(key="ablations", title="Ablations and other configurations", kind="ablations",
                  dataset="",
                  description=("Runs grouped by their label and their loss parameters (seeds of "
                               "one configuration averaged). Δ main: difference of the best-epoch "
                               "mean to the main table's cell of the same pair and method."))
    if frame.empty:
        return table
    cells = []
    ablation = frame[frame["section"] == "ablation"]
    for _, group in ablation.groupby("config_key", sort=True):
        cells.append(make_cell("ablations", group, study))
    cells.extend(leftovers)
    main_cells = {(c.dataset, c.teacher, c.student, c.method): c
                  for t in main for row in t.rows for c in row.cells.values()}
    for cell in cells:
        ref = main_cells.get((cell.dataset, cell.teacher, cell.student, cell.method))
        if ref is None and "CKD" in cell.method:  # variants (KD+CKD, ...) against CKD's cell
            ref = main_cells.get((cell.dataset, cell.teacher, cell.student, "CKD"))
            if ref is not None:
                cell.note = " ".join(filter(None, [cell.note, "Δ main: against the main "
                                                   "table's CKD cell."]))
        d = delta(cell, ref, "main") if ref is not None else None
        if d is not None:
            cell.deltas = {"main": d}
        if cell.table == "other" and not cell.label:
            cell.label = "(other configuration)"
        cell.table = "ablations"
    table.rows = sorted(cells, key=lambda c: (c.dataset, c.teacher or "", c.student, c.label,
                                              method_rank(c.method), c.settings))
    return table


# -- matched budget ------------------------------------------------------------------------------
def budget_table(study: Study) -> Table:
    """Every budget (optimizer steps and images seen) a pair was run at, with the methods that
    trained at it side by side: only cells of one row are compared at an equal budget."""
    frame = study.frame
    table = Table(key="budget", title="Matched budget", kind="budget", dataset="",
                  description=(f"CKD's CIFAR-100 recipe ({recipe_budget('CKD')}) trains longer "
                               f"than its baselines' (KD: {recipe_budget('KD')}), on some pairs "
                               "also at half the batch size: up to four times the optimizer "
                               "steps. Here each row is one pair at one budget, counted in "
                               "optimizer steps and images seen (epochs × batches), so the "
                               "methods of a row trained equally long; their schedules may "
                               "differ (each cell says its own). Runs labelled as ablations "
                               "are left out."))
    if frame.empty:
        return table
    runs = frame[frame["section"].isin(["main", "budget"])]
    distill = runs[runs["method"] != "CE"]
    methods: set[str] = set()
    keys = sorted({(r.dataset, r.teacher, r.student) for r in distill.itertuples()})
    several = False
    for dataset, teacher, student in keys:
        pair = runs[(runs["dataset"] == dataset) & (((runs["teacher"] == teacher)
                                                     & (runs["student"] == student))
                                                    | ((runs["method"] == "CE")
                                                       & (runs["student"] == student)))]
        by_budget: dict[Budget, dict[str, list[pd.DataFrame]]] = {}
        for (method, _), group in pair.groupby(["method", "config_key"], sort=True):
            by_budget.setdefault(budget_of(group), {}).setdefault(method, []).append(group)
        distilled = [b for b, cells in by_budget.items() if set(cells) - {"CE"}]
        several |= len(distilled) > 1
        for budget in sorted(distilled, key=lambda b: (b.steps, b.images)):
            cells = {}
            for method, groups in by_budget[budget].items():
                chosen, _ = choose_configuration(pd.concat(groups))
                cells[method] = make_cell("budget", chosen, study, method=method,
                                          teacher=teacher)
            cells = dict(sorted(cells.items(), key=lambda kv: method_rank(kv[0])))
            row = PairRow(dataset=dataset, teacher=teacher, student=student, cells=cells,
                          budget=budget)
            compute_deltas(row)
            methods.update(m for m in cells if m != "CE")
            table.rows.append(row)
    table.methods = sorted(methods, key=method_rank)
    if not several:
        table.notes.append("No pair was run at more than one budget in these records, so this "
                           "table holds no matched-budget comparison yet.")
    return table


# -- all tables, and the summary -----------------------------------------------------------------
@dataclass
class ReportTables:
    main: list[Table]
    teachers: Table
    ablations: Table
    budget: Table

    def all(self) -> list[Table]:
        return [*self.main, self.teachers, self.ablations, self.budget]


def attach_matched(main: list[Table], budget: Table) -> None:
    """Give each main-table row its pair's matched-budget rows: a main table compares each
    method at its own recipe (CKD trains longer than KD), and these say what is left of a
    difference at equal budget."""
    rows: dict[tuple, list[PairRow]] = {}
    for row in budget.rows:
        rows.setdefault((row.dataset, row.teacher, row.student), []).append(row)
    for table in main:
        for row in table.rows:
            row.matched = rows.get((row.dataset, row.teacher, row.student), [])


def equal_budget_deltas(row: PairRow, method: str, ref: str) -> list[tuple[Budget, Delta]]:
    """(budget, difference) of `method` − `ref` at each budget where the matched-budget runs
    hold both, when the row's own two cells were trained at different budgets (otherwise the
    row's difference already is one at equal budget, and this is empty)."""
    ours, theirs = row.cells.get(method), row.cells.get(ref)
    if ours is None or theirs is None or ours.budget == theirs.budget:
        return []
    out = []
    for other in row.matched:
        cell = other.cells.get(method)
        if cell is not None and ref in cell.deltas and cell.deltas[ref].equal_budget:
            out.append((other.budget, cell.deltas[ref]))
    return out


def build_tables(study: Study) -> ReportTables:
    main, leftovers = main_tables(study)
    leftovers.extend(unused_ce_cells(study, main))
    budget = budget_table(study)
    attach_matched(main, budget)
    return ReportTables(main=main, teachers=teachers_table(study),
                        ablations=ablations_table(study, main, leftovers), budget=budget)


def _fmt(value) -> str | float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(float(value), 4)


def _seeds_text(values: dict) -> str:
    return " ".join(f"{seed}:{value:.2f}" for seed, value in sorted(values.items()))


def _delta_fields(cell: Cell, ref: str, key: str) -> dict:
    """summary.csv's columns of one difference: last-epoch mean and 95 % interval (the claims'
    basis), best-epoch mean, n, and whether the budgets were equal."""
    d = cell.deltas.get(ref)
    if d is None:
        return {f"delta_{key}_last": "", f"delta_{key}_last_ci95": "", f"delta_{key}_best": "",
                f"delta_{key}_n": "", f"delta_{key}_equal_budget": ""}
    ci = f"{d.last.low:.4f} {d.last.high:.4f}" if d.last.has_interval else ""
    return {f"delta_{key}_last": _fmt(d.last.mean), f"delta_{key}_last_ci95": ci,
            f"delta_{key}_best": _fmt(d.best.mean), f"delta_{key}_n": d.last.n,
            f"delta_{key}_equal_budget": "" if d.equal_budget is None else d.equal_budget}


def summary_frame(tables: ReportTables, commands: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per table cell: what the cell shows and the records that produced it."""
    commands = commands or {}
    rows = []
    for table in tables.all():
        for row in table.rows:
            cells = row.cells.values() if isinstance(row, PairRow) else [row]
            for cell in cells:
                paper = cell.paper
                tiers = [cell.tier(p) for p in cell.literature]
                paper_tier = cell.tier(paper) if isinstance(paper, PublishedNumber) else None
                rows.append({
                    "table": table.title, "dataset": cell.dataset, "teacher": cell.teacher or "",
                    "student": cell.student, "method": cell.method, "label": cell.label,
                    "budget": cell.budget.schedule_text, "batch_size": cell.budget.batch_size,
                    "steps": cell.budget.steps, "images": cell.budget.images,
                    "settings": cell.settings, "n": cell.n,
                    "seeds": " ".join(str(s) for s in cell.seeds),
                    "best_top1_mean": _fmt(cell.best.mean), "best_top1_std": _fmt(cell.best.std),
                    "last_top1_mean": _fmt(cell.last.mean), "last_top1_std": _fmt(cell.last.std),
                    "best_top1_per_seed": _seeds_text(cell.per_seed("best")),
                    "last_top1_per_seed": _seeds_text(cell.per_seed("last")),
                    "last_top5_mean": _fmt(cell.top5.mean) if cell.top5.n else "",
                    "teacher_evaluated_top1_mean": _fmt(cell.evaluated.mean)
                    if cell.evaluated is not None else "",
                    "best_epochs": " ".join(str(e) for e in cell.best_epochs),
                    **_delta_fields(cell, "teacher", "teacher"),
                    **_delta_fields(cell, "CE", "ce"),
                    **_delta_fields(cell, "KD", "kd"),
                    **_delta_fields(cell, "main", "main"),
                    "literature": "; ".join(f"{p.top1:.2f} ({p.basis}; {p.source})"
                                            for p in cell.literature),
                    "literature_tier": "; ".join(t.text() if t else "" for t in tiers),
                    "paper_top1": paper.top1 if isinstance(paper, PublishedNumber) else paper,
                    "paper_source": paper.source if isinstance(paper, PublishedNumber) else "",
                    "paper_tier": paper_tier.text() if paper_tier else "",
                    "run_ids": " ".join(cell.run_ids),
                    "records": " ".join(cell.links),
                    "not_counted": " ".join(cell.duplicates.get("run_id", [])),
                    "command": commands.get(table.key, ""),
                })
    return pd.DataFrame(rows)
