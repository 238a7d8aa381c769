"""Command line: ``python -m ckd_lib.train --config run.yaml`` (or a published recipe by name).

The notebooks call the same function, ``ckd_lib.engine.train``; this module only turns arguments
into RunConfigs. A YAML file may hold one config mapping or a list of them (students trained
together on one teacher forward).

Examples::

    python -m ckd_lib.train --config run.yaml
    python -m ckd_lib.train --recipe cifar100 resnet32x4 resnet8x4 CKD \\
        --set teacher_checkpoint=cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth --set seed=1
    python -m ckd_lib.train --recipe cifar100 none resnet56 teacher      # train a teacher
    python -m ckd_lib.train --plugin my_method.py --config run.yaml    # a method of your own
    python -m ckd_lib.train --list-methods
    python -m ckd_lib.train --rerun results/demo/runs/<run id>/record.json --set out_dir=rerun

Checked before any data is read: every field's type and range, the method and its loss
parameters, the teacher checkpoint's existence, subsets and batch against the dataset's size,
the device, and that the output folder is writable and the run is not being trained by another
process. Exit status: 0 done; 2 a bad value or file (one line says which); 3 a run diverged
(its record says so); 75 another process is training the run; 124 stopped on a signal (SIGTERM,
SIGUSR1) with the checkpoint written: the same command resumes; 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys

from ckd_lib.config import ConfigError, RunConfig, load_configs
from ckd_lib.errors import run_cli
from ckd_lib.yamlio import dump_yaml, parse_value


def parse_overrides(items: list[str]) -> dict:
    """``["epochs=5", "loss.cl_weight=50"]`` -> ``{"epochs": 5, "loss": {"cl_weight": 50}}``.

    Values are YAML (numbers in scientific notation included: ``lr=1e-3`` is a number)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        parsed = parse_value(value)
        if key.startswith("loss."):
            if not key[5:]:
                raise ConfigError(f"--set {item!r}: name the loss parameter (loss.NAME=VALUE)")
            out.setdefault("loss", {})[key[5:]] = parsed
        else:
            out[key] = parsed
    return out


def record_config(path: str) -> tuple[RunConfig, list[str]]:
    """The config a run record was trained with, and the plugin files its method came from
    (``--rerun``: the one command that retrains exactly that run)."""
    from ckd_lib.results import read_record

    record = read_record(path)
    plugins = [p["path"] for p in (record.get("provenance") or {}).get("plugins") or []
               if p.get("path")]
    return RunConfig.from_dict(dict(record["config"])), plugins


def build_configs(args: argparse.Namespace) -> list[RunConfig]:
    overrides = parse_overrides(args.set or [])
    if args.rerun:
        return [record_config(args.rerun)[0].with_overrides(overrides)]
    if args.config:
        return [config.with_overrides(overrides) for config in load_configs(args.config)]
    dataset, teacher, student, method = args.recipe
    teacher = None if teacher.lower() in ("none", "-") else teacher
    # a --set student/teacher/method/dataset applies the cell's recipe to that value
    return [RunConfig.from_recipe(dataset, teacher, student, method, **overrides)]


def list_methods() -> str:
    from ckd_lib.methods import get_method, method_names

    return "\n".join(get_method(name).describe() for name in method_names("classification"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckd_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML file: one run config, or a list of them")
    source.add_argument("--recipe", nargs=4, metavar=("DATASET", "TEACHER", "STUDENT", "METHOD"),
                        help="a published recipe from ckd_lib/resources/recipes.csv "
                             "(TEACHER 'none' with METHOD 'teacher' trains a teacher)")
    source.add_argument("--rerun", metavar="RECORD",
                        help="train again exactly the run of this record.json (its config and "
                             "plugins); give --set out_dir=DIR to keep the original")
    source.add_argument("--list-methods", action="store_true",
                        help="list the methods (plugins included) with their loss parameters")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field (loss.NAME for loss parameters); repeatable")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE", default=[],
                        help="load a Python file or module that registers methods; repeatable")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config(s) as YAML and exit without training")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ckd_lib.methods import load_plugins

    load_plugins(args.plugin + (record_config(args.rerun)[1] if args.rerun else []))
    if args.list_methods:
        print(list_methods())
        return 0
    configs = build_configs(args)
    for config in configs:
        config.validate()
    if args.print_config:
        if args.recipe:  # a borrowed recipe says what it passed on, as a YAML comment
            from ckd_lib.recipes import get_recipe

            dataset, teacher, student, method = args.recipe
            note = get_recipe(dataset, None if teacher.lower() in ("none", "-") else teacher,
                              student, method).borrowing()
            if note:
                print(f"# {note}")
        print(dump_yaml([c.to_dict() for c in configs]))
        return 0
    from ckd_lib.engine import stop, train

    old = stop.install_handlers()
    try:
        records = train(configs)
    finally:
        stop.restore_handlers(old)
    # every torchrun rank gets the records; one summary (rank 0's) is enough
    for record in records if int(os.environ.get("RANK", "0")) == 0 else []:
        print(f"{record['run_id']}: best top-1 {record['best']['top1']:.2f} "
              f"(epoch {record['best']['epoch']}), last top-1 {record['last']['top1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
