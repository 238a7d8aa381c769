"""The run designs of the study's tables: which configs make each row, built from the recipes.

Each function returns :class:`Row` objects (a table row name and the config of one seed), so a
notebook trains ``[row.config for row in rows]`` and tabulates by ``row.name``. Everything starts
from the published recipe of the pair (``Settings.config``); a variant changes one thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ckd_lib.config import NOT_HASHED, RunConfig
from ckd_lib.methods import get_method, main_methods
from ckd_lib.study.plan import Settings, StudyError, pair_name

# Named CKD variants of the ablation notebook: what each changes in the CKD recipe.
VARIANTS = {
    "student_negatives": {"loss": {"negatives": "student"}},  # (s_i, s_j) negatives
    "symmetric": {"loss": {"symmetric": True}},  # CLIP-style, both directions
    "positive_only": {"loss": {"positive_only": True}},  # no inter-sample contrast
    "learnable_tau": {"loss": {"learnable_temperature": True}},  # tau trained, from the recipe's
    "KD+CKD": {"method": "KD+CKD"},  # KD (CE 0.1, KD 0.9, T 4) plus the CKD term of the recipe
    "CKD+ReviewKD": {"method": "CKD+ReviewKD"},  # CKD plus ReviewKD's feature loss, warm-up
}


@dataclass(frozen=True)
class Row:
    """One seed of one table row."""

    name: str
    pair: str
    seed: int
    config: RunConfig


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs compute the same run, comparing values (1 == 1.0), not hashes."""

    def canon(config):
        data = config.to_dict()
        data["loss"] = config.loss_params()
        data["init_seed"] = config.effective_init_seed
        for name in NOT_HASHED:
            data.pop(name)
        return data

    return canon(a) == canon(b)


def main_rows(settings: Settings, pairs: list[tuple[str, str]], methods=(),
              seeds=(0,)) -> list[Row]:
    """The main tables: every method of every pair with its published recipe (or the one it
    borrows). ``methods`` default to the registry's main methods (CE, KD, DKD, CKD); any
    registered classification method, a plugin's included, may be added."""
    methods = list(methods) or main_methods()
    for method in methods:
        get_method(method)  # an unknown name fails here, listing the accepted ones
    return [Row(method, pair_name(t, s), seed, settings.config(t, s, method, seed=seed))
            for t, s in pairs for seed in seeds for method in methods]


def ablation_rows(settings: Settings, pair: tuple[str, str], seeds=(0,), temperatures=(),
                  cl_weights=(), batch_sizes=(), chunk_sizes=(), variants=()) -> list[Row]:
    """CKD ablations on one pair. The first row, "baseline", is the recipe's CKD run (the main
    table's run, shared); a value equal to the recipe's is that baseline and is not repeated.

    Batch size: CKD at each batch size B (B - 1 negatives per anchor), and with each chunk size
    c < B (negatives drawn within chunks of c samples: c - 1 negatives at batch B, which
    decouples their number from the batch size). The lr stays the recipe's.
    """
    teacher, student = pair
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise StudyError(f"unknown ablation variant(s) {unknown}; accepted: {list(VARIANTS)}")
    rows = []
    name = pair_name(teacher, student)
    for seed in seeds:
        base = settings.config(teacher, student, "CKD", seed=seed)

        def add(row_name, seed=seed, base=base, **kwargs):
            label = "ablation " + row_name
            cfg = settings.config(teacher, student, kwargs.pop("method", "CKD"), seed=seed,
                                  label=label, **kwargs)
            if not same_run(cfg, base):
                rows.append(Row(row_name, name, seed, cfg))

        rows.append(Row("baseline", name, seed, base))
        for tau in temperatures:
            add(f"tau={tau:g}", loss={"temperature": float(tau)})
        for weight in cl_weights:
            add(f"cl_weight={weight:g}", loss={"cl_weight": float(weight)})
        for batch in batch_sizes:
            if batch != base.batch_size:
                add(f"batch={batch}", batch_size=int(batch))
            for chunk in chunk_sizes:
                if chunk < batch:
                    add(f"batch={batch} chunk={chunk}", batch_size=int(batch),
                        loss={"chunk_size": int(chunk)})
        for variant in variants:
            add(variant, **{k: dict(v) if isinstance(v, dict) else v
                            for k, v in VARIANTS[variant].items()})
    return rows


def matched_budget_rows(settings: Settings, pairs: list[tuple[str, str]], seeds=(0,),
                        methods=("KD", "DKD")) -> list[Row]:
    """CKD and its baselines on each other's budgets, beside their own recipes.

    A budget is counted in optimizer steps and images seen, not in epochs: CKD's recipe is 480
    epochs cosine against the baselines' 240 epochs with steps, and on five pairs also batch 32
    against 64, which is four times the steps. Rows per pair and seed: "CKD (own recipe)",
    "CKD @ X's budget" (X's epochs, schedule and batch size: X's steps and images) and, for each
    baseline X, "X (own recipe)" and "X @ CKD's budget". Where the two recipes' batch sizes
    differ, also "@ ... schedule, own batch": equal epochs, unequal steps (what a comparison by
    epochs alone would give). The own-recipe runs are the main tables' (shared); the lr stays
    each method's own.
    """
    rows = []
    for t, s in pairs:
        name = pair_name(t, s)
        for seed in seeds:
            own = {m: settings.config(t, s, m, seed=seed) for m in ("CKD", *methods)}
            rows.append(Row("CKD (own recipe)", name, seed, own["CKD"]))
            for method in methods:
                rows.append(Row(f"{method} (own recipe)", name, seed, own[method]))
                for ours, theirs in (("CKD", method), (method, "CKD")):
                    rows.append(Row(f"{ours} @ {theirs}'s budget", name, seed, settings.config(
                        t, s, ours, seed=seed, budget_from=theirs, label="matched_budget")))
                    if own[ours].batch_size != own[theirs].batch_size:
                        rows.append(Row(f"{ours} @ {theirs}'s schedule, own batch", name, seed,
                                        settings.config(t, s, ours, seed=seed,
                                                        schedule_from=theirs,
                                                        label="matched_budget")))
    unique, seen = [], set()
    for row in rows:  # "CKD @ KD's budget" and "CKD @ DKD's budget" are often one run
        key = (row.pair, row.seed, row.config.run_id())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique
