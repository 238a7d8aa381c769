"""One device check for every GPU path: run it once whenever a GPU is available.

    python benchmarks/device_check.py [--out FILE] [--sections cifar imagenet capture coco]
    python benchmarks/device_check.py --dry-run      # CPU, tiny sizes: checks the script itself

Runs from the repository root of a plain copy of the working tree (no ``pip install``; it puts
the repository on ``sys.path`` itself) with torch, torchvision, numpy, Pillow, PyYAML and pandas.
Within 8 minutes on one H100/H200 with 16 cores, each section in its own process under a time
budget (a section that fails or overruns reports it in its rows, and the next one runs):

(a) cifar    the CIFAR fast path against the reference DataLoader loop (resnet32x4 ->
             resnet8x4 CKD, batch 64; ``ckd_lib.bench``), and 3 students trained together;
(b) imagenet ResNet34 -> ResNet18 CKD at batch 512, bf16: the step alone (ceiling), end to end
             with the PIL DataLoader and with the nvjpeg loader, each loader alone, nvJPEG's
             pixels against PIL's, on a few thousand generated ImageNet-sized JPEGs;
(c) capture  the engine's CUDA-graph step captured while a DataLoader's pin-memory thread (and,
             separately, the nvjpeg loader's thread) runs, and graph against eager;
(d) coco     COCO R101 -> R18 Faster R-CNN iterations: student alone, DKD, ReviewKD+CKD, with
             peak memory.

Prints one table (figures, the issue's targets, PASS / FAIL / not measured) and writes one JSON
with the card, the software versions, the date, every figure with its details, and the GPU-hours
of one ImageNet and one COCO run that follow from them: to ``--out``, by default
``benchmarks/device_check_<card>_<date>.json`` (a dry run's goes to the temporary directory).
The exit status is 0 when every section finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("cifar", "imagenet", "capture", "coco")
# Share of the time limit each section may use (the imagenet section generates its JPEGs).
SHARES = {"cifar": 0.17, "imagenet": 0.38, "capture": 0.19, "coco": 0.26}
TIME_LIMIT_S = 470.0  # 8 minutes, less the parent's own few seconds
DRY_TIME_LIMIT_S = 240.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/device_check.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    parser.add_argument("--dry-run", action="store_true",
                        help="every section on the CPU at tiny sizes (checks the script)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), metavar="SECTION",
                        help=f"sections to run, among {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help=f"seconds for all sections together (default {TIME_LIMIT_S:.0f}; "
                             f"{DRY_TIME_LIMIT_S:.0f} with --dry-run)")
    parser.add_argument("--imagenet-images", type=int, default=6144,
                        help="distinct generated ImageNet training JPEGs (default 6144)")
    parser.add_argument("--imagenet-copies", type=int, default=4,
                        help="times each is listed (hard links), so that an epoch is long "
                             "enough to time a loader (default 4: 48 batches of 512)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder (default: a temporary one, removed at the end)")
    # set by the parent for a section's own process
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline-s", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; accepted: {', '.join(SECTIONS)}")
    if args.section is not None and args.section not in SECTIONS:
        parser.error(f"unknown section {args.section!r}; accepted: {', '.join(SECTIONS)}")
    if args.imagenet_images < 512:
        parser.error(f"--imagenet-images {args.imagenet_images}: at least one batch of 512")
    if args.imagenet_copies < 1:
        parser.error(f"--imagenet-copies {args.imagenet_copies}: at least 1")
    if args.time_limit is None:
        args.time_limit = DRY_TIME_LIMIT_S if args.dry_run else TIME_LIMIT_S
    return args


def section_main(args: argparse.Namespace) -> int:
    """In a section's own process: run it, recording as it goes."""
    from benchmarks.checks.compat import install_missing
    from benchmarks.checks.recording import Options, Recorder

    recorder = Recorder(args.section, args.result)
    for name in install_missing():
        recorder.note(f"{name} is not installed: a do-nothing stand-in replaced it")
    options = Options(dry_run=args.dry_run, work=args.work,
                      deadline=time.monotonic() + args.deadline_s,
                      imagenet_images=args.imagenet_images,
                      imagenet_copies=args.imagenet_copies)
    if args.dry_run:
        import torch

        # A check of the script, not of speed: on a busy machine several OpenMP threads that
        # wait for each other are much slower than one.
        torch.set_num_threads(1)
    try:
        importlib.import_module(f"benchmarks.checks.{args.section}").run(recorder, options)
    except Exception:
        recorder.finish("error", traceback.format_exc(limit=8))
        return 0  # the parent reads the status; the traceback is in the result
    recorder.finish("ok")
    return 0


def status_row(name: str, result: dict) -> dict:
    """The row that says a section did not finish, and why (first line of the error)."""
    lines = (result.get("error") or "").strip().splitlines()
    # a traceback ends with the exception; a timeout or skip starts with its reason
    reason = (lines[-1] if result["status"] == "error" else lines[0]) if lines else "?"
    return {"key": f"{name}.status", "section": name,
            "figure": f"section {result['status']}: {reason[:70]}", "value": None, "unit": "",
            "target": "", "verdict": "FAIL"}


def parent_main(args: argparse.Namespace) -> int:
    from benchmarks.checks import report
    from benchmarks.checks.runner import run_section

    started = time.monotonic()
    env = report.environment()
    if not args.dry_run and env["card"] == "cpu":
        raise SystemExit("no CUDA device here; use --dry-run to check the script on the CPU")
    with tempfile.TemporaryDirectory(prefix="device_check_") as scratch:
        work = args.work or Path(scratch)
        extra = ["--imagenet-images", str(args.imagenet_images), "--imagenet-copies",
                 str(args.imagenet_copies)]
        sections = {}
        for name in args.sections:
            left = args.time_limit - (time.monotonic() - started)
            budget = min(SHARES[name] * args.time_limit, left)
            if budget < 5:
                sections[name] = {"status": "skipped", "rows": [], "figures": {}, "notes": [],
                                  "error": "the overall time limit was spent", "seconds": 0.0}
            else:
                sections[name] = run_section(name, budget, work, args.dry_run, extra)
            print(f"{name}: {sections[name]['status']} in {sections[name]['seconds']:.0f} s",
                  flush=True)
    rows, figures = [], {}
    for name, result in sections.items():
        rows += result["rows"]
        figures.update(result["figures"])
        if result["status"] != "ok":
            rows.append(status_row(name, result))
    hour_rows, hours = report.gpu_hours(figures, args.dry_run)
    rows += hour_rows
    title = (f"device check: {env['card']}, torch {env['torch']}, torchvision "
             f"{env['torchvision']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, {env['date']}"
             f"{' (CPU dry run)' if args.dry_run else ''}")
    print(f"\n{title}\n{report.format_table(rows)}")
    out = args.out or report.default_out(env, args.dry_run, ROOT / "benchmarks",
                                         Path(tempfile.gettempdir()))
    summary = {**env, "dry_run": args.dry_run, "time_limit_s": args.time_limit,
               "wall_s": time.monotonic() - started, "sections": sections, "rows": rows,
               "gpu_hours": hours, "faster_image_folder_loader":
               report.value_of(figures, "imagenet.faster_loader")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0 if all(s["status"] == "ok" for s in sections.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section:
        return section_main(args)
    return parent_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
