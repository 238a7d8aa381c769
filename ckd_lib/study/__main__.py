"""Command line of the study runner; see ``python -m ckd_lib.study --help``."""

from __future__ import annotations

import argparse
import sys

from ckd_lib.errors import run_cli, stop_on_sigterm
from ckd_lib.study.devices import parse_devices
from ckd_lib.study.params import ParameterError
from ckd_lib.study.paths import notebooks_dir
from ckd_lib.study.profiles import available_profiles, load_profile
from ckd_lib.study.runner import Runner, sync_paired_notebook

EPILOG = """examples:
  python -m ckd_lib.study --profile demo                  # the whole demo, then the report
  python -m ckd_lib.study --profile demo --only 20_same_arch
  python -m ckd_lib.study --profile paper --devices 0,1,2,3
  python -m ckd_lib.study --profile quick --list          # notebooks, parameters, status
  python -m ckd_lib.study --sync-notebooks                # write the paired .ipynb files
  python -m ckd_lib.study --profile paper --plan          # runs, epochs, GPU-hours; runs nothing
  python -m ckd_lib.study --profile paper --executor slurm --slurm partition=gpu
  python -m ckd_lib.study --profile paper --status        # done / running / pending / failed
  python -m ckd_lib.study --profile demo --verify          # audit results against records
  python -m ckd_lib.study --profile demo --export demo.tar.gz
  python -m ckd_lib.study --verify --bundle demo.tar.gz    # audit a bundle made elsewhere
"""


def select(names: list[str], available: list[str]) -> list[str]:
    """``--only`` values: exact notebook names, or unique prefixes ("20" -> "20_same_arch")."""
    out = []
    for item in (part for name in names for part in name.split(",") if part):
        hits = [n for n in available if n == item] or [n for n in available
                                                       if n.startswith(item)]
        if len(hits) != 1:
            raise ParameterError(f"--only {item!r} matches {hits or 'no notebook'}; notebooks of "
                                 f"this profile: {available}")
        out.append(hits[0])
    return out


def list_profile(runner: Runner) -> None:
    """Every notebook of the profile with each parameter's resolved value and where it comes
    from: what ``papermill -p profile NAME`` or Run All in JupyterLab would use."""
    profile = runner.profile
    chain = " -> ".join(p.name for p in reversed(profile.chain()))
    print(f"profile {chain} ({profile.path})")
    if profile.description:
        print("  " + profile.description.strip().replace("\n", "\n  "))
    if profile.plugins:
        print(f"  plugins: {', '.join(profile.plugins)}")
    entries = runner.manifest()
    for job in runner.plan():
        state = "up to date" if runner.is_up_to_date(job, entries) else "to execute"
        print(f"\n{job.name} [{state}]")
        for name, param in job.declared.items():
            value = job.parameters.get(name, param.default)
            origin = "runner" if name in ("profile", "results_dir") else \
                f"profile {profile.origin_of(job.name, name)}"
            print(f"  {name}: {param.annotation} = {value!r}  <- {origin}\n      {param.help}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ckd_lib.study", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a profile's parameters, then execute its notebooks with papermill "
                    "into results/<profile>/executed/ (an interrupted study continues where it "
                    "stopped).")
    parser.add_argument("--profile", default="demo",
                        help=f"profile name or YAML path (available: {available_profiles()})")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                        help="execute only these notebooks (names or unique prefixes)")
    parser.add_argument("--list", action="store_true",
                        help="list the profile's notebooks, parameters and status; run nothing")
    parser.add_argument("--check", action="store_true",
                        help="check the profile's parameters and exit")
    parser.add_argument("--devices", default=None,
                        help="spread independent runs over these devices: GPU indices like "
                             "0,1 (or 'cpu,cpu'); default: train in the notebook's process")
    parser.add_argument("--force", action="store_true",
                        help="re-execute notebooks even if their executed copy is up to date "
                             "(finished runs are still skipped by the engine)")
    parser.add_argument("--results-dir", default="results",
                        help="root of the results tree (default: results)")
    parser.add_argument("--sync-notebooks", action="store_true",
                        help="write notebooks/<name>.ipynb from every <name>.py and exit")
    parser.add_argument("--executor", default="local",
                        help="local: train here (--devices spreads runs over GPUs; the "
                             "default); slurm: submit one job per group of runs through "
                             "submitit and return (run it again later: it submits what failed "
                             "and builds the report once every run is done)")
    parser.add_argument("--slurm", action="append", metavar="KEY=VALUE", default=[],
                        help="a cluster option over the profile's slurm: section (partition, "
                             "account, qos, time_min, gpus_per_task, cpus_per_task, mem_gb, "
                             "constraint, sbatch, setup, ...); repeatable")
    parser.add_argument("--plan", action="store_true",
                        help="print the runs, epochs and estimated GPU-hours per notebook from "
                             "the measured step times in benchmarks/; run nothing")
    parser.add_argument("--status", action="store_true",
                        help="print done / running / pending / failed per run (records and "
                             "SLURM), with the log of failed jobs; run nothing")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE", default=[],
                        help="load a file or module that registers methods (besides the "
                             "profile's plugins); repeatable")
    parser.add_argument("--verify", action="store_true",
                        help="audit the profile's results: every model evaluated again against "
                             "its record, checksums, each run's inputs, summary.csv recomputed; "
                             "one line per mismatch, exit 1 on any; trains nothing")
    parser.add_argument("--export", metavar="FILE.tar.gz",
                        help="write the profile's results bundle (records, models, notebooks, "
                             "report, manifest of sha256s)")
    parser.add_argument("--bundle", metavar="FILE.tar.gz",
                        help="with --verify: audit a bundle made by --export, anywhere")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ckd_lib.methods import load_plugins

    if args.sync_notebooks:
        for source in sorted(notebooks_dir().glob("[0-9]*.py")):
            print(sync_paired_notebook(source))
        return 0
    if args.verify or args.export or args.bundle is not None:
        from ckd_lib.study.audit import command

        return command(args)
    from ckd_lib.study import executor

    kind = executor.check_executor(args.executor)
    profile = load_profile(args.profile)
    options = profile.slurm.with_overrides(args.slurm)  # checked before anything is submitted
    if kind == "slurm" and args.devices is not None:
        raise ParameterError("--devices spreads runs over this machine's GPUs (--executor "
                             "local); on SLURM the profile's slurm: section sets the resources")
    # loaded here and exported in CKD_PLUGINS, so the notebooks' kernels and workers load them
    load_plugins(profile.plugins + args.plugin)
    devices = parse_devices(args.devices) if args.devices is not None else None
    runner = Runner(profile, results_dir=args.results_dir, devices=devices, force=args.force)
    if args.list:
        list_profile(runner)
        return 0
    only = select(args.only, list(profile.notebooks)) if args.only else None
    if args.check:
        jobs, plan = runner.check(only)
        runs = sum(len(unit.runs) for unit in plan.units)
        print(f"profile {profile.name}: parameters of {len(jobs)} notebook(s) and the configs "
              f"of the {runs} run(s) they train are valid")
        return 0
    runner.plan(only)  # every parameter checked before anything else
    if args.plan:
        return executor.show_plan(runner, only)
    if args.status:
        return executor.show_status(runner, only)
    if kind == "slurm":
        return executor.submit(runner, options, only, args.argv)
    with stop_on_sigterm():  # like Ctrl-C: the notebook's kernel is shut down, the rest kept
        return runner.run(only)


if __name__ == "__main__":
    sys.exit(main())
