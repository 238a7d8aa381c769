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

Interrupt it at any time: the same command resumes from the last checkpoint, and a finished run
is not recomputed (its record is returned).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from ckd_lib.detection.config import DetectionConfig
from ckd_lib.train import parse_overrides


def build_config(args: argparse.Namespace) -> DetectionConfig:
    overrides = parse_overrides(args.set or [])
    if args.config:
        if args.iterations is not None:
            raise ValueError("--iterations rescales a recipe's schedule and applies to --recipe "
                             "only; with --config set iterations and milestones in the file")
        with open(args.config) as handle:
            data = yaml.safe_load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: expected one mapping of DetectionConfig fields")
        data["loss"] = {**data.get("loss", {}), **overrides.pop("loss", {})}
        data.update(overrides)
        return DetectionConfig.from_dict(data)
    teacher, student, method = args.recipe
    teacher = None if teacher.lower() in ("none", "-") else teacher
    loss = overrides.pop("loss", None)
    # Fields that name the cell itself are applied after the recipe is read, so a bad value
    # reaches validate() (which names the accepted ones) instead of clashing with the cell.
    late = {k: overrides.pop(k) for k in ("student", "teacher", "method", "iterations")
            if k in overrides}
    config = DetectionConfig.from_recipe(teacher, student, method, iterations=args.iterations,
                                         data_root=overrides.pop("data_root", "datasets/coco"),
                                         **overrides)
    config = dataclasses.replace(config, **late)
    if loss:
        config.loss.update(loss)
    return config


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
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    args = parser.parse_args(argv)
    try:
        config = build_config(args)
        config.validate(check_files=not args.print_config)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    from ckd_lib.detection.engine import train_detection

    record = train_detection(config)
    last = record["last"]
    ap = "n/a" if last["AP"] is None else f"{last['AP']:.2f}"
    print(f"{record['run_id']}: {record['status']}, box AP {ap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
