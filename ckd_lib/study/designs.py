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
    """CKD and its baselines on each other's schedules, beside their own.

    Rows: "CKD (own: 480 cosine)", "CKD @ baselines' schedule", and for each baseline method
    "KD (own: 240 step)", "KD @ CKD's schedule". The own-schedule runs are the main table's runs
    (shared). The lr and the batch size stay each method's own.
    """
    rows = []
    for t, s in pairs:
        name = pair_name(t, s)
        for seed in seeds:
            rows.append(Row("CKD (own schedule)", name, seed, settings.config(t, s, "CKD",
                                                                            seed=seed)))
            rows.append(Row("CKD @ baselines' schedule", name, seed, settings.config(
                t, s, "CKD", seed=seed, schedule_from="KD", label="matched_budget")))
            for method in methods:
                rows.append(Row(f"{method} (own schedule)", name, seed,
                                settings.config(t, s, method, seed=seed)))
                rows.append(Row(f"{method} @ CKD's schedule", name, seed, settings.config(
                    t, s, method, seed=seed, schedule_from="CKD", label="matched_budget")))
    return rows
