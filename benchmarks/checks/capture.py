"""Section (c): the engine's CUDA-graph step, captured while a loader's own thread is running.

Why: on an H200 a capture with the ImageNet DataLoader failed because the DataLoader's
pin-memory thread allocated pinned memory during the capture; ``GraphedStep`` now captures with
``capture_error_mode="thread_local"``, which had never been re-run. Here the engine trains
ImageNet-sized batches with ``cuda_graphs=True``, once with the PIL DataLoader (pin-memory thread
on) and once with the nvjpeg loader (its decoding thread queues work on a side stream while the
main thread captures). Passing means: captured, replayed, finite losses, no error.

Also, as the older gpu_check did: the graph step against the eager step on one seeded fp32 run
(the epoch losses must agree to float rounding).
"""

from __future__ import annotations

import math

from ckd_lib.config import RunConfig

from . import targets
from .engine_runs import CountingGraphedStep, imagenet_config, train_once
from .jpeg_folder import make_imagefolder
from .recording import Options, Recorder

FULL = {"teacher": "ResNet34", "student": "ResNet18", "batch": 256, "train_images": 2560,
        "val_images": 256, "classes": 16, "run_seconds": 20}
DRY = {"teacher": "ResNet18", "student": "ResNet18", "batch": 4, "train_images": 8,
       "val_images": 4, "classes": 2, "run_seconds": 5}
SYNTHETIC = "synthetic:num_classes=10,num_train={n},num_test={m}"


def graph_vs_eager(rec: Recorder, options: Options) -> None:
    key, label = "capture.graph_vs_eager", "graph step vs eager step (fp32): max rel. loss diff"
    if options.dry_run:
        rec.skipped(key, label, "no CUDA graphs on the CPU")
        return
    losses = {}
    for graphs in (False, True):
        config = RunConfig(student="resnet8", method="CKD", teacher="resnet20",
                           dataset=SYNTHETIC.format(n=2048, m=512), teacher_checkpoint="untrained",
                           epochs=2, schedule="cosine", lr=0.05, batch_size=64, device="cuda",
                           amp="none", channels_last=False, cuda_graphs=graphs, progress=False,
                           out_dir="unused")
        record, _ = train_once(config)
        losses[graphs] = [h["loss_ckd"] for h in record["history"]]
    worst = max(abs(a - b) / max(abs(a), 1e-12)
                for a, b in zip(losses[False], losses[True], strict=True))
    rec.row(key, label, worst, "", detail={"eager": losses[False], "graph": losses[True]})


def capture_with(rec: Recorder, options: Options, s: dict, root, loader: str) -> None:
    measured = not options.dry_run
    what = {"torch": "PIL DataLoader, pin-memory thread", "nvjpeg": "nvjpeg loader thread"}
    key, label = f"capture.{loader}", f"CUDA-graph capture + replay, {what[loader]}"
    if options.left() < s["run_seconds"]:
        rec.skipped(key, label, "time guard")
        return
    workers = 1 if options.dry_run else options.cpu_count()
    config = imagenet_config(s["teacher"], s["student"], data_root=str(root), epochs=1,
                             batch_size=s["batch"], eval_batch_size=s["batch"],
                             num_workers=workers, loader=loader, cuda_graphs=measured,
                             device=options.device)
    try:
        record, trainer = train_once(config, count_graphs=True)
    except Exception as error:  # the failure is the finding: report it, keep going
        rec.row(key, label, "error", "", "passes", targets.pass_fail(False, measured),
                detail=f"{type(error).__name__}: {error}")
        return
    made = CountingGraphedStep.made
    captured = bool(made) and made[0].graph is not None
    replays = made[0].replays if made else 0
    finite = all(math.isfinite(v) for h in record["history"] for k, v in h.items()
                 if k.startswith("loss_"))
    pinning = getattr(trainer.train_loader, "pin_memory", None)
    ok = captured and replays >= 2 and finite
    value = f"captured, {replays} replays" if captured else "not captured (eager)"
    rec.row(key, label, value, "", "passes", targets.pass_fail(ok, measured),
            detail={"captured": captured, "replays": replays, "finite_losses": finite,
                    "pin_memory": pinning, "steps": len(trainer.train_loader)})


def run(rec: Recorder, options: Options) -> None:
    s = DRY if options.dry_run else FULL
    root = options.work / "capture_folder"
    make_imagefolder(root, s["train_images"], s["val_images"], s["classes"],
                     processes=1 if options.dry_run else None, seed=1)
    graph_vs_eager(rec, options)
    for loader in ("torch", "nvjpeg"):
        capture_with(rec, options, s, root, loader)
