"""The paper's claims, each tested on the study's runs under one stated rule.

A reproduction exists to say whether a paper's claims hold. Each :class:`Claim` here states one
claim of the CKD paper (or of this study: C8) and names a test: a function from the report's data
(:class:`ClaimContext`) to :class:`Comparison` objects, each a seed-paired difference with its
interval and verdict (``ckd_lib.report.stats``). The claim's verdict combines them
(``stats.combine``). A claim whose runs the profile lacks says "not run in this profile".

The claims live in one place, :data:`CLAIMS`, in the order the report lists them; a user adds one
with :func:`register_claim` (a plugin file may call it, like ``register_method``).

What is compared is always the last-epoch top-1 (the unbiased number; the best epoch is selected
on the test set), with the best-epoch difference beside it for comparison with the papers; AP for
COCO. Several pairs enter one comparison as the per-seed mean of their differences, so the seed
stays the unit of replication. Budgets are counted in optimizer steps and images: every
comparison says whether its two sides trained equally long.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ckd_lib.data.catalog import FOLDER_DATASETS, dataset_base
from ckd_lib.rehearsal import is_rehearsal
from ckd_lib.report.collect import Study, loss_params
from ckd_lib.report.stats import (
    INCONCLUSIVE,
    NOT_RUN,
    NOT_SUPPORTED,
    SUPPORTED,
    Interval,
    Verdict,
    combine,
    difference_of,
    equivalence,
    interval,
    mean_over_groups,
    paired,
    verdict,
)
from ckd_lib.report.tables import Cell, PairRow, ReportTables

# A change of top-1 smaller than this is "no effect" for the insensitivity claims (C3): about
# four times the seed sd on CIFAR-100 (0.18-0.25) and twice the binomial 95 % half-width of a
# 76 % accuracy on 10,000 test images (0.43).
INSENSITIVE_MARGIN = 1.0
# "Costs about what KD costs" (C5): CKD's time and memory per iteration at most this much above.
COST_MARGIN = 0.10


@dataclass
class Part:
    """One pair's (or one measurement's) contribution to a comparison."""

    what: str
    diff: Interval
    a: Cell | None = None
    b: Cell | None = None
    run_ids: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Comparison:
    """One tested difference of a claim: what minus what, where, its interval and verdict."""

    label: str
    diff: Interval  # last-epoch (or AP, or cost ratio) differences per seed
    verdict: Verdict
    budget: str = ""  # "equal budget ..." or "unequal budgets: ..."
    best: Interval | None = None  # the best-epoch difference, for comparison with the papers
    parts: list[Part] = field(default_factory=list)
    unit: str = "points"  # what diff counts: points of top-1, AP, or "ratio"

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r for p in self.parts for r in p.run_ids))

    @property
    def unequal_budget(self) -> bool:
        """Whether the sides trained different optimizer steps (said wherever it is shown)."""
        return self.budget.startswith("UNEQUAL")


@dataclass
class Evidence:
    claim: Claim
    comparisons: list[Comparison]
    verdict: Verdict
    note: str = ""

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r for c in self.comparisons for r in c.run_ids))

    @property
    def seeds(self) -> int:
        return max((c.diff.n for c in self.comparisons), default=0)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper (or of this study) and the test of it on a profile's runs."""

    key: str
    statement: str
    paper_says: str
    test: Callable[[ClaimContext], list[Comparison]]
    rule: str = "gain"  # gain: interval above 0; equivalence: inside a margin


@dataclass
class ClaimContext:
    """What the tests read: the report's study and tables, the efficiency artifact's data and
    the COCO detection runs."""

    study: Study
    tables: ReportTables
    efficiency: dict | None = None
    detection: pd.DataFrame = field(default_factory=pd.DataFrame)


CLAIMS: dict[str, Claim] = {}


def register_claim(key: str, statement: str, *, paper_says: str, rule: str = "gain"):
    """Decorator registering ``test(context) -> list[Comparison]`` as claim ``key``."""
    def wrap(test):
        CLAIMS[key] = Claim(key, statement, paper_says, test, rule)
        return test
    return wrap


REHEARSAL_VERDICT = Verdict(NOT_RUN, "a rehearsal (a few steps on generated data): its "
                            "comparisons are computed to test the report, not the claim")


def evaluate(context: ClaimContext) -> list[Evidence]:
    """Every registered claim's evidence, in order. A rehearsal's comparisons are computed (the
    rehearsal tests this code too) but judge nothing: every verdict is "not run"."""
    detection = context.detection
    rehearsal = any(map(is_rehearsal, context.study.records)) or bool(
        "rehearsal" in detection and detection["rehearsal"].any())
    out = []
    for claim in CLAIMS.values():
        comparisons = claim.test(context)
        if rehearsal:
            for c in comparisons:
                c.verdict = REHEARSAL_VERDICT
            result = REHEARSAL_VERDICT
        else:
            result = combine([c.verdict for c in comparisons]) if comparisons else \
                Verdict(NOT_RUN, "none of its runs are in this profile")
        out.append(Evidence(claim, comparisons, result))
    return out


# -- building comparisons -------------------------------------------------------------------------
def _is_imagenet(dataset: str) -> bool:
    return dataset_base(dataset) in FOLDER_DATASETS


def main_rows(context: ClaimContext, kind: str | None = None, imagenet: bool = False
              ) -> list[PairRow]:
    """The main tables' rows: same- or cross-architecture pairs (``kind`` "same"/"cross", None:
    both), of the 32x32 datasets or of ImageNet/Places365."""
    rows = []
    for table in context.tables.main:
        if _is_imagenet(table.dataset) != imagenet:
            continue
        if kind is not None and not table.key.endswith(f":{kind}"):
            continue
        rows.extend(table.rows)
    return rows


def cell_difference(a: Cell, b: Cell, what: str, metric: str = "last") -> Part:
    return Part(what, paired(a.per_seed(metric), b.per_seed(metric)), a, b,
                [*a.run_ids, *b.run_ids])


def _budget_words(parts: list[Part], method: str, ref: str) -> str:
    """One phrase for the budgets of a comparison's parts."""
    from ckd_lib.report.tables import budget_comparison

    words = [budget_comparison(p.a.budget, p.b.budget, method, ref) for p in parts
             if p.a is not None and p.b is not None]
    if not words:
        return ""
    if all(w.startswith("equal budget") for w in words):
        return "equal budget in steps and images" if len(words) > 1 else words[0]
    ratios = sorted({p.a.budget.ratio(p.b.budget) for p in parts if p.a and p.b})
    span = f"{ratios[0]:.2g}×" if len(ratios) == 1 else f"{ratios[0]:.2g}×–{ratios[-1]:.2g}×"
    unequal = sum(not w.startswith("equal") for w in words)
    return (f"UNEQUAL budgets on {unequal} of {len(words)} pair(s): {method} trained {span} "
            f"{ref}'s optimizer steps (each at its own recipe)")


def aggregate(label: str, parts: list[Part], judge=verdict, unit: str = "points",
              budget: str = "") -> Comparison:
    """Several pairs' differences as one per-seed series; judged by ``judge``."""
    if not parts:
        return Comparison(label, interval([]), Verdict(NOT_RUN, "no runs to compare"),
                          budget, unit=unit)
    diff = mean_over_groups([p.diff for p in parts]) if len(parts) > 1 else parts[0].diff
    best = None
    if all(p.a is not None and p.b is not None for p in parts):
        best_parts = [paired(p.a.per_seed("best"), p.b.per_seed("best")) for p in parts]
        best = mean_over_groups(best_parts) if len(best_parts) > 1 else best_parts[0]
    result = judge(diff)
    if parts and diff.n == 0:
        result = Verdict(INCONCLUSIVE, "no seed common to all its pairs")
    return Comparison(label, diff, result, budget, best, parts, unit)


def method_vs(rows: list[PairRow], method: str, ref: str, where: str) -> Comparison:
    """``method`` − ``ref`` on every row holding both, each at its cell's own budget."""
    parts = [cell_difference(row.cells[method], row.cells[ref], row.pair) for row in rows
             if method in row.cells and ref in row.cells]
    return aggregate(f"{method} − {ref}, {where}", parts,
                     budget=_budget_words(parts, method, ref))


def method_vs_at_equal_budget(rows: list[PairRow], method: str, ref: str, where: str
                              ) -> list[Comparison]:
    """``method`` − ``ref`` at equal budgets in steps and images, from the matched-budget rows
    of each pair: one comparison at the budget of ``ref``'s own recipe, one at ``method``'s
    (one only, on pairs where the two recipes' budgets are equal)."""
    found: dict[str, list[Part]] = {}
    for row in rows:
        owners: dict = {}
        for whose in (ref, method):
            own = row.cells.get(whose)
            if own is not None:
                owners.setdefault(own.budget, whose)  # equal budgets: counted once, as ref's
        for budget, whose in owners.items():
            for matched in row.matched:
                a, b = matched.cells.get(method), matched.cells.get(ref)
                if a is not None and b is not None and matched.budget == budget:
                    found.setdefault(whose, []).append(
                        cell_difference(a, b, f"{row.pair} at {budget.text()}"))
    out = [aggregate(f"{method} − {ref} at {whose}'s recipe budget, {where}", parts,
                     budget="equal budget in steps and images")
           for whose, parts in found.items()]
    if not out:
        out.append(aggregate(f"{method} − {ref} at an equal budget, {where}", [],
                             budget="no runs at an equal budget"))
    return out


def _config(context: ClaimContext, cell: Cell) -> dict:
    return context.study.by_id[cell.run_ids[0]]["config"] if cell.run_ids else {}


IGNORED = {"seed", "init_seed", "label", "out_dir", "progress", "checkpoint_every",
           "eval_batch_size", "data_seed", "device", "loader", "num_workers", "amp",
           "channels_last", "cuda_graphs"}


def changed(config: dict, base: dict) -> dict[str, object]:
    """What a configuration changes against ``base``: its fields and loss parameters that
    differ ("loss.temperature": 2.0, "batch_size": 32, "method": ...)."""
    out = {k: v for k, v in config.items() if k not in IGNORED | {"loss"} and base.get(k) != v}
    ours, theirs = loss_params(config), loss_params(base)
    out.update({f"loss.{k}": v for k, v in ours.items() if theirs.get(k) != v})
    return out


def ablation_parts(context: ClaimContext, wanted: Callable[[dict], str | None]
                   ) -> list[tuple[PairRow, Part]]:
    """Ablation cells against the main table's CKD cell of their pair, where ``wanted`` (given
    what the ablation changes) names the part, else skips it."""
    mains = {(row.dataset, row.teacher, row.student): row for row in main_rows(context)}
    out = []
    for cell in context.tables.ablations.rows:
        row = mains.get((cell.dataset, cell.teacher, cell.student))
        if row is None or "CKD" not in row.cells or not cell.run_ids:
            continue
        base = row.cells["CKD"]
        name = wanted(changed(_config(context, cell), _config(context, base)))
        if name:
            out.append((row, cell_difference(cell, base, f"{row.pair}: {name}")))
    return out


# -- the claims -----------------------------------------------------------------------------------
@register_claim(
    "C1", "CKD beats KD and DKD on same-architecture pairs",
    paper_says="CIFAR-100 tables, teacher and student of one architecture family")
def _c1(context: ClaimContext) -> list[Comparison]:
    rows = main_rows(context, "same")
    return [method_vs(rows, "CKD", ref, "same-architecture pairs, each at its own recipe")
            for ref in ("KD", "DKD")]


@register_claim(
    "C2", "CKD's gains over KD are larger on cross-architecture pairs",
    paper_says="CIFAR-100 tables: 'notable gains in heterogeneous teacher-student settings'")
def _c2(context: ClaimContext) -> list[Comparison]:
    same = method_vs(main_rows(context, "same"), "CKD", "KD", "same")
    cross = method_vs(main_rows(context, "cross"), "CKD", "KD", "cross")
    if not same.parts or not cross.parts:
        return [aggregate("(CKD − KD on cross) − (CKD − KD on same-architecture pairs)", [])]
    diff = difference_of(cross.diff, same.diff)
    parts = [Part(f"cross: {p.what}", p.diff, p.a, p.b, p.run_ids) for p in cross.parts] + \
        [Part(f"same: {p.what}", p.diff, p.a, p.b, p.run_ids) for p in same.parts]
    return [Comparison("(CKD − KD on cross) − (CKD − KD on same-architecture pairs)", diff,
                       verdict(diff), "each method at its own recipe", None, parts)]


def _temperature(change: dict) -> str | None:
    return f"τ {change['loss.temperature']:g}" if set(change) == {"loss.temperature"} else None


def _batch(change: dict) -> str | None:
    return f"batch {change['batch_size']}" if set(change) == {"batch_size"} else None


def _insensitive(context, what: str, name_of) -> Comparison:
    found = ablation_parts(context, name_of)
    parts = [p for _, p in found]
    verdicts = [equivalence(p.diff, INSENSITIVE_MARGIN) for p in parts]
    result = combine(verdicts) if parts else Verdict(NOT_RUN, "no runs to compare")
    worst = max(parts, key=lambda p: abs(p.diff.mean) if p.diff.n else -1) if parts else None
    diff = worst.diff if worst is not None else interval([])
    label = f"CKD at each {what} tried − CKD at the recipe's, within ±{INSENSITIVE_MARGIN:g} point"
    if worst is not None and len(parts) > 1:
        label += f" (statistic: the largest, {worst.what.split(': ')[-1]})"
    return Comparison(label, diff, result, "", None, parts)


@register_claim(
    "C3", "CKD needs no temperature tuning and no large batch",
    paper_says="abstract: 'eliminating dependencies on temperature parameters and large batch "
               "sizes'; the τ and batch-size ablations", rule="equivalence")
def _c3(context: ClaimContext) -> list[Comparison]:
    tau = _insensitive(context, "temperature", _temperature)
    batch = _insensitive(context, "batch size", _batch)
    if batch.parts:
        batch.budget = "a smaller batch takes more optimizer steps for the same epochs"
    return [tau, batch]


@register_claim(
    "C4", "CKD adds to feature distillation (CKD+ReviewKD beats CKD, and ReviewKD where run)",
    paper_says="combination with ReviewKD's feature loss")
def _c4(context: ClaimContext) -> list[Comparison]:
    found = ablation_parts(context, lambda change: "CKD+ReviewKD" if change.get("method") ==
                           "CKD+ReviewKD" else None)
    out = [aggregate("CKD+ReviewKD − CKD", [p for _, p in found],
                     budget=_budget_words([p for _, p in found], "CKD+ReviewKD", "CKD"))]
    alone = {(c.dataset, c.teacher, c.student): c for c in context.tables.ablations.rows
             if c.method == "ReviewKD"}
    parts = [cell_difference(part.a, alone[key], row.pair) for row, part in found
             if (key := (row.dataset, row.teacher, row.student)) in alone]
    if parts:
        out.append(aggregate("CKD+ReviewKD − ReviewKD", parts))
    return out


@register_claim(
    "C5", "CKD costs about what KD costs (time and memory per iteration)",
    paper_says="'favorable training efficiency'; no parameters beyond the student's",
    rule="equivalence")
def _c5(context: ClaimContext) -> list[Comparison]:
    from ckd_lib.analysis.efficiency import cost_ratios

    data = context.efficiency
    if not data or not data.get("rows"):
        return []
    ratios = cost_ratios(data, "CKD", "KD")
    if ratios is None:
        return [Comparison("CKD / KD time per iteration", interval([]),
                           Verdict(NOT_RUN, "CKD and KD were not both timed"), unit="ratio")]
    time_ratio = interval(ratios["time_per_round"], list(range(len(ratios["time_per_round"]))))
    if ratios["noisy"]:
        time_verdict = Verdict(INCONCLUSIVE, "noisy measurement: " + ratios["noisy"])
    else:
        logs = interval([math.log(r) for r in ratios["time_per_round"]])
        time_verdict = _at_most(logs, math.log1p(COST_MARGIN), "rounds")
    memory = ratios["memory"]
    memory_verdict = (Verdict(SUPPORTED, f"activations ×{memory:.3f} of KD's")
                      if memory is not None and memory <= 1 + COST_MARGIN else
                      Verdict(NOT_SUPPORTED, f"activations ×{memory:.3f} of KD's")
                      if memory is not None else Verdict(NOT_RUN, "memory not measured"))
    where = ratios["where"]
    return [Comparison(f"CKD / KD time per iteration, interleaved rounds ({where}), at most "
                       f"×{1 + COST_MARGIN:g}", time_ratio, time_verdict, unit="ratio"),
            Comparison(f"CKD / KD activations kept for backward, at most ×{1 + COST_MARGIN:g}",
                       interval([memory] if memory is not None else []), memory_verdict,
                       unit="ratio")]


def _at_most(logs: Interval, bound: float, what: str, min_n: int = 3) -> Verdict:
    """A cost ratio (as logs) is at most exp(bound): the interval's top below the bound."""
    if logs.n < min_n:
        return Verdict(INCONCLUSIVE, f"{logs.n} {what}; {min_n} needed")
    if logs.high <= bound:
        return Verdict(SUPPORTED, f"interval below ×{math.exp(bound):.2f} over {logs.n} {what}")
    if logs.low > bound:
        return Verdict(NOT_SUPPORTED, f"interval above ×{math.exp(bound):.2f} over {logs.n} "
                       f"{what}")
    return Verdict(INCONCLUSIVE, f"interval crosses ×{math.exp(bound):.2f} over {logs.n} {what}")


@register_claim(
    "C6", "CKD beats KD and DKD on ImageNet (ResNet34→ResNet18, ResNet50→MobileNetV1)",
    paper_says="ImageNet-1K table")
def _c6(context: ClaimContext) -> list[Comparison]:
    rows = main_rows(context, imagenet=True)
    if not rows:
        return []
    return [method_vs(rows, "CKD", ref, "ImageNet pairs, each at its own recipe")
            for ref in ("KD", "DKD")]


@register_claim(
    "C7", "ReviewKD+CKD beats DKD (and ReviewKD) on COCO detection",
    paper_says="MS-COCO table (Faster R-CNN FPN, box AP)")
def _c7(context: ClaimContext) -> list[Comparison]:
    frame = context.detection
    if frame is None or frame.empty:
        return []
    out = []
    for ref in ("DKD", "ReviewKD"):
        parts = []
        for (kind, teacher, student), group in frame.groupby(["kind", "teacher", "student"]):
            ours = group[group["method"] == "ReviewKD+CKD"]
            theirs = group[group["method"] == ref]
            if ours.empty or theirs.empty:
                continue
            diff = paired(dict(zip(ours["seed"], ours["AP"], strict=True)),
                          dict(zip(theirs["seed"], theirs["AP"], strict=True)))
            steps = "" if set(ours["iterations"]) == set(theirs["iterations"]) else \
                " (unequal iterations)"
            parts.append(Part(f"{kind} {teacher} → {student}{steps}", diff,
                              run_ids=[*ours["run_id"], *theirs["run_id"]]))
        if parts or ref == "DKD":
            out.append(aggregate(f"ReviewKD+CKD − {ref}, box AP", parts, unit="AP"))
    return out


@register_claim(
    "C8", "CKD's gain over KD and DKD survives at an equal budget in optimizer steps",
    paper_says="this study's own question: the published CKD recipes train 2-4× the steps of "
               "their baselines")
def _c8(context: ClaimContext) -> list[Comparison]:
    rows = main_rows(context)
    return [c for ref in ("KD", "DKD")
            for c in method_vs_at_equal_budget(rows, "CKD", ref, "every pair")]


# -- reading verdicts ----------------------------------------------------------------------------
def verdict_counts(evidence: list[Evidence]) -> dict[str, int]:
    counts = {v: 0 for v in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN)}
    for e in evidence:
        counts[e.verdict.verdict] += 1
    return counts


def statistic_parts(c: Comparison) -> tuple[str, str]:
    """("+0.84 [0.21, 1.47]", "points, 5 seeds; best epoch +0.90"): the estimate with its 95 %
    interval (kept on one line), and what it counts."""
    if not c.diff.n:
        return "–", ""
    if c.unit == "ratio":
        if c.diff.has_interval and min(c.diff.values) > 0:
            logs = interval([math.log(v) for v in c.diff.values])
            return (f"×{math.exp(logs.mean):.3f} [{math.exp(logs.low):.3f}, "
                    f"{math.exp(logs.high):.3f}]", f"{c.diff.n} rounds")
        return f"×{float(np.mean(c.diff.values)):.3f}", f"{c.diff.n} value(s), no interval"
    seeds = f"{c.diff.n} seed{'s' if c.diff.n != 1 else ''}"
    if c.diff.has_interval:
        estimate = f"{c.diff.mean:+.2f} [{c.diff.low:.2f}, {c.diff.high:.2f}]"
    else:
        estimate, seeds = f"{c.diff.mean:+.2f}", seeds + ", no interval"
    detail = f"{c.unit}, {seeds}"
    if c.best is not None and c.best.n:
        detail += f"; best epoch {c.best.mean:+.2f}"
    return estimate, detail


def statistic_text(c: Comparison) -> str:
    """"+0.84 [0.21, 1.47] points, 5 seeds; best epoch +0.90"."""
    estimate, detail = statistic_parts(c)
    return f"{estimate} {detail}".strip()
