"""Section (a): the CIFAR fast path against the reference DataLoader loop, and 3 students.

resnet32x4 -> resnet8x4 CKD at batch 64 on CIFAR-100-sized synthetic data, timed by
``ckd_lib.bench`` (the same functions ``make bench`` runs), so these figures continue the table
of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import torch

from ckd_lib import bench

from . import targets
from .recording import Options, Recorder

FULL = {"train": 50000, "test": 10000, "batch": 64, "epochs": 3, "ref_epochs": 1,
        "ref_seconds": 30, "fast_seconds": 25}
DRY = {"train": 32, "test": 16, "batch": 16, "epochs": 2, "ref_epochs": 1,
       "ref_seconds": 5, "fast_seconds": 5}


def run(rec: Recorder, options: Options) -> None:
    s = DRY if options.dry_run else FULL
    measured = not options.dry_run
    device = torch.device(options.device)
    data = f"synthetic:num_classes=100,num_train={s['train']},num_test={s['test']}"
    rec.note(f"CIFAR: {data}, batch {s['batch']}, fast path {s['epochs']} epochs (first "
             f"excluded), reference {s['ref_epochs']}")
    ref = None
    if options.left() > s["ref_seconds"]:
        ref = bench.reference_loop(data, device, s["ref_epochs"], s["batch"])
        rec.row("cifar.reference_train_s", "reference loop (DataLoader, fp32, eager): train",
                ref["train_s_per_epoch"], "s/epoch", detail=ref)
        rec.row("cifar.reference_eval_s", "reference loop: evaluation", ref["eval_s_per_epoch"],
                "s/epoch")
    else:
        rec.skipped("cifar.reference_train_s", "reference loop: train", "time guard", "s/epoch")
    one = None
    if options.left() > s["fast_seconds"]:
        one = bench.fast_path(data, device, s["epochs"], s["batch"])
        rec.row("cifar.fast_train_s", "fast path (engine defaults): train",
                one["train_s_per_epoch"], "s/epoch", targets.CIFAR_TARGET,
                targets.cifar_verdict(one["train_s_per_epoch"], measured), detail=one)
        rec.row("cifar.fast_eval_s", "fast path: evaluation", one["eval_s_per_epoch"], "s/epoch")
        if ref:
            total = ref["train_s_per_epoch"] + ref["eval_s_per_epoch"]
            rec.row("cifar.speedup", "fast path speed-up over the reference (train + eval)",
                    total / (one["train_s_per_epoch"] + one["eval_s_per_epoch"]), "x")
    else:
        rec.skipped("cifar.fast_train_s", "fast path: train", "time guard", "s/epoch",
                    targets.CIFAR_TARGET)
    if one and options.left() > 2 * s["fast_seconds"]:
        three = bench.fast_path(data, device, s["epochs"], s["batch"], students=3)
        ratio = ((three["train_s_per_epoch"] + three["eval_s_per_epoch"])
                 / (one["train_s_per_epoch"] + one["eval_s_per_epoch"]))
        rec.row("cifar.three_students_ratio", "3 students sharing the teacher, time / 1 student",
                ratio, "x", detail=three)
    else:
        rec.skipped("cifar.three_students_ratio", "3 students, time / 1 student", "time guard",
                    "x")
