"""Command line: ``python -m ckd_lib.train --config run.yaml`` (or a published recipe by name).

The notebooks call the same function, ``ckd_lib.engine.train``; this module only turns arguments
into RunConfigs. A YAML file may hold one config mapping or a list of them (students trained
together on one teacher forward).

Examples::

    python -m ckd_lib.train --config run.yaml
    python -m ckd_lib.train --recipe cifar100 resnet32x4 resnet8x4 CKD \\
        --set teacher_checkpoint=cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth --set seed=1
    python -m ckd_lib.train --recipe cifar100 none resnet56 teacher      # train a teacher
"""

from __future__ import annotations

import argparse
import sys

import yaml

from ckd_lib.config import ConfigError, RunConfig, load_configs


def parse_overrides(items: list[str]) -> dict:
    """``["epochs=5", "loss.cl_weight=50"]`` -> ``{"epochs": 5, "loss": {"cl_weight": 50}}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parsed = yaml.safe_load(value) if value else None
        if key.startswith("loss."):
            out.setdefault("loss", {})[key[5:]] = parsed
        else:
            out[key] = parsed
    return out


def build_configs(args: argparse.Namespace) -> list[RunConfig]:
    overrides = parse_overrides(args.set or [])
    if args.config:
        configs = []
        for config in load_configs(args.config):
            data = config.to_dict()
            data["loss"] = {**data["loss"], **overrides.get("loss", {})}
            data.update({k: v for k, v in overrides.items() if k != "loss"})
            configs.append(RunConfig.from_dict(data))
        return configs
    dataset, teacher, student, method = args.recipe
    teacher = None if teacher.lower() in ("none", "-") else teacher
    return [RunConfig.from_recipe(dataset, teacher, student, method, **overrides)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckd_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML file: one run config, or a list of them")
    source.add_argument("--recipe", nargs=4, metavar=("DATASET", "TEACHER", "STUDENT", "METHOD"),
                        help="a published recipe from ckd_lib/resources/recipes.csv "
                             "(TEACHER 'none' with METHOD 'teacher' trains a teacher)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field (loss.NAME for loss parameters); repeatable")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config(s) as YAML and exit without training")
    args = parser.parse_args(argv)
    try:
        configs = build_configs(args)
        for config in configs:
            config.validate()
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump([c.to_dict() for c in configs], sort_keys=False))
        return 0
    from ckd_lib.engine import train

    records = train(configs)
    for record in records:
        print(f"{record['run_id']}: best top-1 {record['best']['top1']:.2f} "
              f"(epoch {record['best']['epoch']}), last top-1 {record['last']['top1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
