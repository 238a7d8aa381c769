"""Command line for one COCO detection run; torchrun gives it several GPUs.

Examples::

    # the paper's cell R101 -> R18, ReviewKD + CKD (360k iterations, 4 images per batch)
    torchrun --nproc_per_node 8 -m ckd_lib.detection.train --recipe R101 R18 ReviewKD+CKD \\
        --set data_root=datasets/coco --set teacher_checkpoint=teachers/r101_fpn_3x.pth
    # the DKD baseline at the same 360k budget (matched budget)
    python -m ckd_lib.detection.train --recipe R101 R18 DKD --iterations 360000 --set ...
    # train a teacher with the same engine (Detectron2's 3x schedule)
    python -m ckd_lib.detection.train --recipe none R101 teacher --set data_root=datasets/coco
    python -m ckd_lib.detection.train --config run.yaml --print-config

Interrupt it at any time: the same command resumes from the last checkpoint (SIGTERM or SIGUSR1
checkpoint the current iteration first), and a finished run is not recomputed. Exit status as
``python -m ckd_lib.train``: 2 bad input, 3 diverged, 75 trained by another process, 124
stopped on a signal with its checkpoint written.
"""

from __future__ import annotations

import argparse
import os
import sys

from ckd_lib.configbase import ConfigError
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.errors import run_cli
from ckd_lib.train import parse_overrides
from ckd_lib.yamlio import dump_yaml, read_yaml


def build_config(args: argparse.Namespace) -> DetectionConfig:
    overrides = parse_overrides(args.set or [])
    if args.config:
        if args.iterations is not None:
            raise ConfigError("--iterations rescales a recipe's schedule and applies to --recipe "
                              "only; with --config set iterations and milestones in the file")
        data = read_yaml(args.config, "config file")
        if not isinstance(data, dict):
            raise ConfigError(f"{args.config}: expected one mapping of DetectionConfig fields, "
                              f"got {type(data).__name__}")
        return DetectionConfig.from_dict(data).with_overrides(overrides)
    teacher, student, method = args.recipe
    teacher = None if teacher.lower() in ("none", "-") else teacher
    if "iterations" in overrides:
        raise ConfigError("--set iterations=... would keep the recipe's milestones; use "
                          "--iterations N, which scales them in proportion")
    overrides.setdefault("data_root", "datasets/coco")
    # a --set student/teacher/method is applied after the recipe is read (validate names the
    # accepted values of a bad one)
    return DetectionConfig.from_recipe(teacher, student, method, args.iterations, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckd_lib.detection.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML file with one DetectionConfig mapping")
    source.add_argument("--recipe", nargs=3, metavar=("TEACHER", "STUDENT", "METHOD"),
                        help="a COCO recipe of ckd_lib/resources (TEACHER 'none' with METHOD "
                             "'teacher' or 'baseline' trains a detector alone)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="change the recipe's length; milestones scale in proportion")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field (loss.NAME for loss parameters)")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE", default=[],
                        help="load a Python file or module that registers methods; repeatable")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ckd_lib.methods import load_plugins

    load_plugins(args.plugin)
    config = build_config(args)
    config.validate(check_files=not args.print_config)
    if args.print_config:
        print(dump_yaml(config.to_dict()))
        return 0
    from ckd_lib.detection.engine import train_detection
    from ckd_lib.engine import stop

    old = stop.install_handlers()
    try:
        record = train_detection(config)
    finally:
        stop.restore_handlers(old)
    last = record["last"]
    ap = "n/a" if last["AP"] is None else f"{last['AP']:.2f}"
    if int(os.environ.get("RANK", "0")) == 0:  # one summary per run, not one per rank
        print(f"{record['run_id']}: {record['status']}, box AP {ap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
