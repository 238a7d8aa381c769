"""The claims machinery on constructed records with known effects, and its statistics against
independent computations (scipy's t distribution, numpy in float64).

Records are built here as the engine writes them (config, history, best/last, a model file with
its sha256), with chosen last-epoch accuracies per seed, so the effect each claim sees is known:
+1.0 ± 0.2 over 5 seeds must be supported, the same over 2 seeds inconclusive, −0.5 ± 0.1 not
supported, and runs of unequal optimizer steps (batch or epochs) are never compared as matched.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ckd_lib.config import RunConfig
from ckd_lib.report import prepare
from ckd_lib.report.claims import CLAIMS, statistic_text
from ckd_lib.report.stats import (
    INCONCLUSIVE,
    NOT_RUN,
    NOT_SUPPORTED,
    SUPPORTED,
    equivalence,
    interval,
    mean_over_groups,
    paired,
    tier,
    verdict,
)

PROFILE = "constructed"
TRAIN_IMAGES = 640
DATA = "synthetic:num_classes=10,num_train=640,num_test=64"


def write_run(runs: Path, method: str, seed: int, last: float, *, teacher="resnet56",
              student="resnet20", epochs=4, batch_size=64, schedule="cosine", label="same_arch",
              loss=None) -> str:
    """A complete record (and its model file) of one run whose last-epoch top-1 is ``last``
    (the best epoch is the last one, so best == last)."""
    cfg = RunConfig(student=student, method=method, dataset=DATA,
                    teacher=None if method == "CE" else teacher,
                    teacher_checkpoint=None if method == "CE" else "untrained",
                    epochs=epochs, batch_size=batch_size, schedule=schedule, seed=seed,
                    label=label, loss=dict(loss or {}), out_dir=str(runs), device="cpu")
    run_id = cfg.run_id()
    folder = runs / run_id
    folder.mkdir(parents=True)
    model = folder / "model_last.pth"
    model.write_bytes(f"weights of {run_id}".encode())
    history = [{"epoch": e, "lr": 0.01, "train_top1": 50.0, "test_top1": last - (epochs - e),
                "test_top5": 90.0, "test_loss": 1.0, "train_seconds": 1.0, "eval_seconds": 0.1,
                "train_images": TRAIN_IMAGES, "loss_ce": 1.0} for e in range(1, epochs + 1)]
    record = {
        "record_version": 2, "run_id": run_id, "status": "complete", "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(), "seed": seed, "init_seed": seed, "group": [run_id],
        "distributed": {"world_size": 1, "per_device_batch": batch_size,
                        "negatives_scope": "local"},
        "data": {"name": DATA, "train_size": TRAIN_IMAGES, "test_size": 64},
        "teacher": None if method == "CE" else {"name": teacher, "checkpoint": "untrained",
                                                "sha256": None, "test_top1": 80.0},
        "history": history, "best": {"epoch": epochs, "top1": last, "top5": 90.0},
        "last": {"epoch": epochs, "top1": last, "top5": 90.0}, "epochs_done": epochs,
        "train_seconds": 4.0, "wall_seconds": 5.0,
        "model": {"file": model.name, "bytes": model.stat().st_size,
                  "sha256": hashlib.sha256(model.read_bytes()).hexdigest()},
        "provenance": {"commit": "abc", "dirty": False, "device_type": "cpu",
                       "device_name": "Test CPU", "device_count": 1}}
    (folder / "record.json").write_text(json.dumps(record))
    return run_id


def values(mean: float, sd: float, n: int, seed: int = 0) -> np.ndarray:
    """n values with exactly this sample mean and sd (so the verdict is known in advance)."""
    raw = np.random.default_rng(seed).standard_normal(n)
    if n == 1:
        return np.array([mean])
    raw = (raw - raw.mean()) / raw.std(ddof=1)
    return mean + sd * raw


def build(tmp_path: Path, effect: float, sd: float, seeds: int, *, ckd_epochs=4, ckd_batch=64,
          kd_epochs=4, kd_batch=64) -> Path:
    """One same-architecture pair, CE/KD/DKD/CKD per seed; CKD − KD and CKD − DKD = ``effect``
    per seed with sample sd ``sd``. Returns the results folder."""
    results = tmp_path / "results"
    runs = results / PROFILE / "runs"
    diffs = values(effect, sd, seeds)
    for seed in range(seeds):
        base = 70.0 + 0.3 * seed
        write_run(runs, "CE", seed, base - 2, epochs=kd_epochs, batch_size=kd_batch,
                  schedule="step")
        for method in ("KD", "DKD"):
            write_run(runs, method, seed, base, epochs=kd_epochs, batch_size=kd_batch,
                      schedule="step")
        write_run(runs, "CKD", seed, base + float(diffs[seed]), epochs=ckd_epochs,
                  batch_size=ckd_batch)
    return results


def evidence(results: Path) -> dict:
    report = prepare(PROFILE, results)
    return {e.claim.key: e for e in report.claims}, report


# -- statistics against independent truth ----------------------------------------------------------
def test_paired_interval_is_students_t_over_the_common_seeds():
    a = {0: 71.2, 1: 70.4, 2: 71.9, 3: 70.8, 7: 99.0}
    b = {0: 70.1, 1: 70.0, 2: 70.9, 3: 70.2, 5: 12.0}
    diff = paired(a, b)
    d = np.array([a[s] - b[s] for s in (0, 1, 2, 3)], dtype=np.float64)
    low, high = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert diff.seeds == (0, 1, 2, 3)
    assert diff.mean == pytest.approx(d.mean())
    assert diff.sd == pytest.approx(d.std(ddof=1))
    assert (diff.low, diff.high) == (pytest.approx(low), pytest.approx(high))


def test_pairs_of_a_table_average_per_seed_over_the_seeds_all_hold():
    g1, g2 = interval([1.0, 2.0, 3.0], [0, 1, 2]), interval([3.0, 5.0], [1, 2])
    both = mean_over_groups([g1, g2])
    assert both.seeds == (1, 2)
    assert both.values == (2.5, 4.0)


@pytest.mark.parametrize("mean, sd, n, expected", [
    (1.0, 0.2, 5, SUPPORTED), (1.0, 0.2, 2, INCONCLUSIVE), (-0.5, 0.1, 5, NOT_SUPPORTED),
    (0.1, 1.0, 5, INCONCLUSIVE), (1.0, 0.2, 0, NOT_RUN)])
def test_verdict_rule(mean, sd, n, expected):
    diff = interval(values(mean, sd, n) if n else [])
    assert verdict(diff).verdict == expected


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    assert equivalence(interval(values(0.1, 0.2, 5)), 1.0).verdict == SUPPORTED
    assert equivalence(interval(values(-3.0, 0.2, 5)), 1.0).verdict == NOT_SUPPORTED
    assert equivalence(interval(values(0.8, 0.5, 5)), 1.0).verdict == INCONCLUSIVE
    assert equivalence(interval(values(0.0, 0.1, 2)), 1.0).verdict == INCONCLUSIVE


def test_tiers_against_a_published_mean():
    five = values(76.0, 0.25, 5)
    half = scipy_stats.t.ppf(0.975, 4) * 0.25 / math.sqrt(5)  # 0.31: above the 0.3 floor
    assert tier(five, 76.0 + 0.95 * half).symbol == "✓"
    assert tier(five, 76.0 + 0.95 * half).tolerance == pytest.approx(half)
    assert tier(five, 76.5).symbol == "≈"  # 0.5 below
    assert tier(five, 77.0).symbol == "✗"  # 1.0 below
    assert tier(five, 75.0).symbol == "✗"  # 1.0 above: differs too
    assert tier([76.0], 76.29).symbol == "✓"  # one seed: the 0.3 floor
    assert tier([76.0], 76.31).symbol == "≈"


# -- claims on constructed records -----------------------------------------------------------------
def test_a_gain_of_one_point_over_five_seeds_is_supported(tmp_path):
    found, report = evidence(build(tmp_path, 1.0, 0.2, 5))
    c1 = found["C1"]
    assert c1.verdict.verdict == SUPPORTED
    kd = c1.comparisons[0]
    assert kd.diff.n == 5 and kd.diff.mean == pytest.approx(1.0)
    assert kd.diff.sd == pytest.approx(0.2)
    assert kd.budget.startswith("equal budget")
    # equal own budgets: C8 holds the same comparison once, at equal steps
    assert found["C8"].verdict.verdict == SUPPORTED
    assert len(found["C8"].comparisons) == 2  # vs KD and vs DKD, each once
    # claims that have no runs here say so
    for key in ("C4", "C6", "C7"):
        assert found[key].verdict.verdict == NOT_RUN
    assert statistic_text(kd).startswith("+1.00 [")


def test_a_rehearsal_computes_the_comparisons_but_judges_nothing(tmp_path):
    results = build(tmp_path, 1.0, 0.2, 5)  # would be supported, were these real runs
    for path in (results / PROFILE / "runs").glob("*/record.json"):
        record = json.loads(path.read_text())
        record["rehearsal"] = {"dataset": "cifar100", "batch_size": 64}
        path.write_text(json.dumps(record))
    found, report = evidence(results)
    assert found["C1"].comparisons and found["C1"].comparisons[0].diff.n == 5
    for e in found.values():
        assert e.verdict.verdict == NOT_RUN and "rehearsal" in e.verdict.reason
        assert all(c.verdict.verdict == NOT_RUN for c in e.comparisons)


def test_a_detection_rehearsal_judges_nothing_either(tmp_path):
    # the COCO rehearsal has detection runs only: its rehearsal field is in the detection frame
    import dataclasses

    import pandas as pd

    from ckd_lib.report.claims import ClaimContext, evaluate

    _, report = evidence(build(tmp_path, 1.0, 0.2, 5))
    rows = [{"run_id": f"{m}-{seed}", "kind": "faster", "teacher": "resnet101",
             "student": "resnet18", "method": m, "seed": seed, "AP": ap + seed,
             "iterations": 2, "rehearsal": True}
            for seed in range(3) for m, ap in (("ReviewKD+CKD", 30.0), ("DKD", 20.0))]
    context = ClaimContext(report.study, report.tables, detection=pd.DataFrame(rows))
    found = {e.claim.key: e for e in evaluate(context)}
    assert found["C7"].comparisons and found["C7"].comparisons[0].diff.n == 3
    assert found["C7"].verdict.verdict == NOT_RUN and "rehearsal" in found["C7"].verdict.reason
    real = dataclasses.replace(context, detection=pd.DataFrame(rows).assign(rehearsal=False))
    assert {e.claim.key: e for e in evaluate(real)}["C7"].verdict.verdict == SUPPORTED


def test_two_seeds_are_inconclusive(tmp_path):
    found, _ = evidence(build(tmp_path, 1.0, 0.2, 2))
    assert found["C1"].verdict.verdict == INCONCLUSIVE
    assert "3 needed" in found["C1"].verdict.reason


def test_a_loss_of_half_a_point_is_not_supported(tmp_path):
    found, _ = evidence(build(tmp_path, -0.5, 0.1, 5))
    assert found["C1"].verdict.verdict == NOT_SUPPORTED
    assert found["C8"].verdict.verdict == NOT_SUPPORTED


@pytest.mark.parametrize("ckd_epochs, ckd_batch, ratio", [(8, 32, 4.0), (4, 32, 2.0),
                                                           (8, 64, 2.0)])
def test_unequal_steps_are_detected_and_never_called_matched(tmp_path, ckd_epochs, ckd_batch,
                                                             ratio):
    results = build(tmp_path, 1.0, 0.2, 5, ckd_epochs=ckd_epochs, ckd_batch=ckd_batch)
    found, report = evidence(results)
    (table,) = report.tables.main
    (row,) = table.rows
    d = row.cells["CKD"].deltas["KD"]
    assert d.equal_budget is False
    assert row.cells["CKD"].budget.ratio(row.cells["KD"].budget) == pytest.approx(ratio)
    assert f"{ratio:.2g}×" in d.words
    c1 = found["C1"].comparisons[0]
    assert c1.budget.startswith("UNEQUAL")
    # no runs at an equal budget: C8 has nothing to compare
    assert found["C8"].verdict.verdict == NOT_RUN
    # the matched-budget table keeps the two budgets in separate rows
    budgets = [(r.budget.steps, set(r.cells)) for r in report.tables.budget.rows]
    assert all(not {"CKD", "KD"} <= methods for _, methods in budgets)
    # and the report's Δ cell says it first, uncoloured
    from ckd_lib.report.html import delta_html

    html = delta_html(row, "CKD", "KD")
    assert "unequal budgets" in html and "ckd-pos" not in html
    # the summary's line for C1 says it too, not only the claim's row
    assert "C1 supported (at UNEQUAL budgets in optimizer steps)" in " ".join(
        report.reproduction.results)


def test_matched_runs_give_the_equal_budget_verdict(tmp_path):
    """CKD at 4× the steps beats KD by 1 point; at KD's budget it loses by 0.5: C1 (own recipes)
    is supported and says the budgets are unequal, C8 (equal steps) is not supported."""
    results = build(tmp_path, 1.0, 0.2, 5, ckd_epochs=8, ckd_batch=32)
    runs = results / PROFILE / "runs"
    for seed, diff in enumerate(values(-0.5, 0.1, 5, seed=3)):
        write_run(runs, "CKD", seed, 70.0 + 0.3 * seed + float(diff), epochs=4, batch_size=64,
                  schedule="step", label="matched_budget")
    found, report = evidence(results)
    assert found["C1"].verdict.verdict == SUPPORTED
    assert found["C1"].comparisons[0].budget.startswith("UNEQUAL")
    c8 = found["C8"]
    kd = next(c for c in c8.comparisons if "− KD at KD's recipe budget" in c.label)
    assert kd.diff.mean == pytest.approx(-0.5) and kd.verdict.verdict == NOT_SUPPORTED
    assert c8.verdict.verdict == NOT_SUPPORTED
    # every run a claim cites exists, and its link resolves from the report's folder
    for e in found.values():
        for rid in e.run_ids:
            record = report.study.by_id[rid]
            assert Path(record["_path"]).is_file()


def test_claims_live_in_one_declared_place():
    assert list(CLAIMS) == [f"C{i}" for i in range(1, 9)]
    for claim in CLAIMS.values():
        assert claim.statement and claim.paper_says and callable(claim.test)


# -- efficiency measured so that noise cannot publish ---------------------------------------------
def test_interleaved_timing_orders_steps_of_known_cost():
    from ckd_lib.analysis.efficiency import interleaved_times

    calls = []

    def step(name, seconds):
        def run():
            calls.append(name)
            time.sleep(seconds)
        return run

    times = interleaved_times({"slow": step("slow", 0.006), "fast": step("fast", 0.002),
                               "mid": step("mid", 0.004)}, rounds=3, iterations=4, warmup=1)
    medians = {name: np.median([v for r in t for v in r]) for name, t in times.items()}
    assert medians["fast"] < medians["mid"] < medians["slow"]
    assert all(len(t) == 3 and all(len(r) == 4 for r in t) for t in times.values())
    # rounds interleave: the order rotates, so no step always comes first
    timed = calls[3:]
    firsts = [timed[i * 12] for i in range(3)]
    assert firsts == ["slow", "fast", "mid"]


def test_an_impossible_ordering_is_flagged_and_gives_no_ratio():
    from ckd_lib.analysis.efficiency import cost_ratios, ordering_problem
    from ckd_lib.report.claims import _c5

    rows = [{"method": "CE", "ms_per_iter": 30.0, "round_ms": [30, 31, 29]},
            {"method": "KD", "ms_per_iter": 20.0, "round_ms": [20, 21, 19]},
            {"method": "CKD", "ms_per_iter": 21.0, "round_ms": [21, 22, 20]}]
    problem = ordering_problem(rows)
    assert "CE (no teacher)" in problem and "KD" in problem
    assert ordering_problem([{**rows[0], "ms_per_iter": 10.0}, *rows[1:]]) == ""
    data = {"rows": [{**r, "saved_activations_mb": 10.0, "device": "cpu"} for r in rows]}
    assert cost_ratios(data, "CKD", "KD")["noisy"]

    class Context:
        efficiency = data

    time_comparison = _c5(Context())[0]
    assert time_comparison.verdict.verdict == INCONCLUSIVE
    assert "noisy" in time_comparison.verdict.reason
    # a clean measurement: CKD within 5 % of KD over 5 rounds is "about what KD costs"
    clean = {"rows": [{"method": "CE", "ms_per_iter": 10.0, "round_ms": [10] * 5},
                      {"method": "KD", "ms_per_iter": 20.0, "round_ms": [20, 21, 19, 20, 22]},
                      {"method": "CKD", "ms_per_iter": 21.0,
                       "round_ms": [20.6, 21.7, 19.5, 20.9, 22.4]}]}
    for r in clean["rows"]:
        r["saved_activations_mb"] = 10.0
    Context.efficiency = clean
    assert _c5(Context())[0].verdict.verdict == SUPPORTED


# -- the published numbers -------------------------------------------------------------------------
def test_the_shipped_template_lists_every_cell_and_loads_once_filled(tmp_path):
    from ckd_lib.recipes import pairs
    from ckd_lib.report.literature import PaperNumbers, paper_numbers_template

    shipped = Path(__file__).resolve().parents[1] / "results" / "paper_numbers.template.csv"
    assert shipped.read_text() == paper_numbers_template()  # regenerate it if this fails
    import csv

    rows = list(csv.DictReader(shipped.open()))
    assert len(rows) == 5 * (len(pairs("cifar100")) + len(pairs("imagenet")))
    assert all(r["top1"] == "" for r in rows)
    assert PaperNumbers(shipped).rows == []  # empty rows are skipped, not errors
    filled = tmp_path / "paper_numbers.csv"
    text = shipped.read_text().replace("resnet56,resnet20,CKD,,", "resnet56,resnet20,CKD,71.5,")
    filled.write_text(text)
    numbers = PaperNumbers(filled)
    assert numbers.error is None
    assert numbers.lookup("cifar100", "resnet56", "resnet20", "CKD").top1 == 71.5
