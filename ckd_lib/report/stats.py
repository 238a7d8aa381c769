"""The statistics every number of the report that claims something is computed with.

Why one module: a difference, a verdict and a tier against a published number must follow one
stated rule everywhere (the claims table, the table cells, the figures, summary.csv), and the
report prints these rules beside what they decide (:data:`VERDICT_RULE`, :data:`TIER_RULE`).

- A difference between two configurations is *seed-paired*: runs of the same seed share the data
  order, the augmentation and the student's initial weights, so ``a_s - b_s`` removes what the
  seed alone moves. Its 95 % confidence interval is Student's t with n - 1 degrees of freedom
  over the n common seeds (:func:`paired`); with fewer than 2 seeds there is none.
- A verdict (:func:`verdict`) needs at least :data:`MIN_SEEDS` seeds and an interval that
  excludes 0 (or, for a claim of *no* effect, an interval inside a stated margin).
- A tier against a published mean (:func:`tier`) follows the rule this field uses: within
  max(0.3, t·sd/√n) is reproduced, up to 0.7 below is close, anything else differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

LEVEL = 0.95
MIN_SEEDS = 3
# A published number counts as reproduced within max(TIER_FLOOR, t·sd/√n), as close up to
# TIER_CLOSE below it (STUDY §7: seed sd on CIFAR-100 is 0.18-0.25; best - last is ~0.3).
TIER_FLOOR = 0.3
TIER_CLOSE = 0.7

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = (
    "supported", "not supported", "inconclusive", "not run in this profile")
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN)

VERDICT_RULE = (
    f"Each comparison is a seed-paired difference (runs of the same seed share data order, "
    f"augmentation and initial weights) of last-epoch test top-1 (the unbiased number: best-epoch "
    f"is selected on the test set), with a {LEVEL:.0%} Student-t confidence interval of n - 1 "
    f"degrees of freedom over the n common seeds. A claim of a gain is supported when n ≥ "
    f"{MIN_SEEDS} and the interval lies above 0, not supported when it lies below 0, and "
    f"inconclusive with fewer than {MIN_SEEDS} seeds or an interval that contains 0. A claim of "
    "no effect (insensitivity, equal cost) is supported when every interval lies inside its "
    "stated margin, not supported when one lies wholly outside it, inconclusive otherwise. A "
    "claim of several comparisons is supported when all are, not supported when one is not.")
TIER_RULE = (
    f"Against a published mean with our n seeds: ✓ reproduced when |ours − published| ≤ "
    f"max({TIER_FLOOR}, t·sd/√n) (t of n − 1 degrees of freedom at {LEVEL:.0%}; "
    f"{TIER_FLOOR} with one seed), ≈ close when ours is up to {TIER_CLOSE} below, ✗ differs "
    "otherwise (above or further below). Like is compared with like: best-epoch means with "
    "best-epoch numbers, last-epoch with last-epoch.")


def t_quantile(n: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile for n values (n - 1 degrees of freedom); NaN below 2."""
    if n < 2:
        return math.nan
    return float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1))


@dataclass(frozen=True)
class Interval:
    """Mean, sample sd (ddof 1) and the t confidence interval of some values (per seed)."""

    values: tuple[float, ...]
    seeds: tuple = ()
    level: float = LEVEL

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def half_width(self) -> float:
        return t_quantile(self.n, self.level) * self.sd / math.sqrt(self.n) if self.n > 1 \
            else math.nan

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def has_interval(self) -> bool:
        return self.n > 1 and math.isfinite(self.half_width)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 2, sign: bool = True) -> str:
        """"+1.23 [0.80, 1.66]" (the 95 % interval), or "+1.23 (n=1, no interval)"."""
        if not self.values:
            return "–"
        fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
        mean = fmt.format(self.mean)
        if not self.has_interval:
            return f"{mean} (n={self.n}, no interval)"
        return f"{mean} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def interval(values: Sequence[float], seeds: Sequence = ()) -> Interval:
    return Interval(tuple(float(v) for v in values), tuple(seeds))


def paired(a: Mapping, b: Mapping) -> Interval:
    """``a[s] - b[s]`` over the seeds both hold (seed -> value mappings), with its interval."""
    seeds = sorted(set(a) & set(b), key=str)
    return interval([a[s] - b[s] for s in seeds], seeds)


def mean_over_groups(groups: Sequence[Interval]) -> Interval:
    """Per seed, the mean of several groups' paired differences (one per pair of a table), over
    the seeds every group holds: the seed stays the unit of replication."""
    if not groups:
        return interval([])
    common = set(groups[0].seeds)
    for g in groups[1:]:
        common &= set(g.seeds)
    seeds = sorted(common, key=str)
    per_seed = [float(np.mean([dict(zip(g.seeds, g.values, strict=True))[s] for g in groups]))
                for s in seeds]
    return interval(per_seed, seeds)


def difference_of(a: Interval, b: Interval) -> Interval:
    """Per seed, ``a - b`` of two per-seed series (e.g. the cross-architecture gain minus the
    same-architecture gain), over their common seeds."""
    return paired(dict(zip(a.seeds, a.values, strict=True)),
                  dict(zip(b.seeds, b.values, strict=True)))


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str


def verdict(diff: Interval, min_seeds: int = MIN_SEEDS) -> Verdict:
    """The verdict on a claim that ``diff`` is positive (see :data:`VERDICT_RULE`)."""
    if diff.n == 0:
        return Verdict(NOT_RUN, "no runs to compare")
    if diff.n < min_seeds:
        return Verdict(INCONCLUSIVE, f"{diff.n} common seed(s); {min_seeds} needed")
    if diff.low > 0:
        return Verdict(SUPPORTED, f"interval above 0 over {diff.n} seeds")
    if diff.high < 0:
        return Verdict(NOT_SUPPORTED, f"interval below 0 over {diff.n} seeds")
    return Verdict(INCONCLUSIVE, f"interval contains 0 over {diff.n} seeds")


def equivalence(diff: Interval, margin: float, min_seeds: int = MIN_SEEDS) -> Verdict:
    """The verdict on a claim that ``diff`` is negligible: inside ±``margin``."""
    if diff.n == 0:
        return Verdict(NOT_RUN, "no runs to compare")
    if diff.n < min_seeds:
        return Verdict(INCONCLUSIVE, f"{diff.n} common seed(s); {min_seeds} needed")
    if -margin <= diff.low and diff.high <= margin:
        return Verdict(SUPPORTED, f"interval inside ±{margin:g} over {diff.n} seeds")
    if diff.low > margin or diff.high < -margin:
        return Verdict(NOT_SUPPORTED, f"interval outside ±{margin:g} over {diff.n} seeds")
    return Verdict(INCONCLUSIVE, f"interval crosses ±{margin:g} over {diff.n} seeds")


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Several comparisons of one claim: supported when all are, not supported when one is not,
    not run when none ran, else inconclusive (with the first reason that keeps it open)."""
    ran = [v for v in verdicts if v.verdict != NOT_RUN]
    if not ran:
        return Verdict(NOT_RUN, "none of its runs are in this profile")
    failed = [v for v in ran if v.verdict == NOT_SUPPORTED]
    if failed:
        return Verdict(NOT_SUPPORTED, failed[0].reason)
    if all(v.verdict == SUPPORTED for v in ran) and len(ran) == len(verdicts):
        return Verdict(SUPPORTED, ran[0].reason if len(ran) == 1 else
                       f"all {len(ran)} comparisons supported")
    open_ = [v for v in verdicts if v.verdict != SUPPORTED]
    return Verdict(INCONCLUSIVE, open_[0].reason)


# -- against published numbers --------------------------------------------------------------
@dataclass(frozen=True)
class Tier:
    symbol: str  # ✓ ≈ ✗
    label: str  # reproduced / close / differs
    delta: float  # ours - published
    tolerance: float

    def text(self) -> str:
        return f"{self.symbol} {self.delta:+.2f} (tol. {self.tolerance:.2f})"


def tier(values: Sequence[float], published: float, level: float = LEVEL) -> Tier | None:
    """Where our seeds' mean stands against a published mean (see :data:`TIER_RULE`)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values or published is None or not math.isfinite(published):
        return None
    stats = interval(values)
    tolerance = TIER_FLOOR
    if stats.has_interval:
        tolerance = max(TIER_FLOOR, stats.half_width)
    delta = stats.mean - published
    if abs(delta) <= tolerance:
        return Tier("✓", "reproduced", delta, tolerance)
    if -TIER_CLOSE <= delta < -tolerance:
        return Tier("≈", "close", delta, tolerance)
    return Tier("✗", "differs", delta, tolerance)
