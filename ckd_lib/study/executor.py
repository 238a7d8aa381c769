"""The study's commands beyond executing the notebooks here: ``--plan``, ``--status`` and
``--executor slurm``.

``--executor slurm`` submits and returns: the user may log out. Run again, the same command
submits only what is missing or failed (never what is pending or running), and once every run is
done it executes the notebooks and the report here (unless the notebooks job it submitted is
still to run), as ``--executor local`` would: the engine then skips every finished run.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ckd_lib.errors import InputError
from ckd_lib.study import planning
from ckd_lib.study.plan import StudyError
from ckd_lib.study.runner import Runner
from ckd_lib.study.slurm_options import SlurmOptions

EXECUTORS = ("local", "slurm")


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise InputError(f"--executor {name!r} is not accepted; accepted: {', '.join(EXECUTORS)}")
    return name


def plan_path(runner: Runner) -> Path:
    from ckd_lib.study.slurm import slurm_dir

    return slurm_dir(runner.paths) / "plan.json"


def collect(runner: Runner, only: list[str] | None, log=print) -> planning.Plan:
    log(f"planning profile {runner.profile.name}: executing its notebooks up to their training "
        "cells (nothing trains)")
    return planning.collect(runner, only)


def show_plan(runner: Runner, only: list[str] | None) -> int:
    from ckd_lib.study.cost import format_cost

    print(format_cost(collect(runner, only)))
    return 0


def show_status(runner: Runner, only: list[str] | None) -> int:
    from ckd_lib.study.status import print_status

    plan = planning.Plan.load(plan_path(runner)) if not only else None
    if plan is None:
        plan = collect(runner, only)
    print_status(plan, runner)
    return 0


def submit(runner: Runner, options: SlurmOptions, only: list[str] | None, argv: list[str],
           log=print) -> int:
    """``--executor slurm``: submit what the plan still needs; see the module docstring.
    ``argv``: this command's arguments, to tell the user the command to run again."""
    from ckd_lib.study import slurm
    from ckd_lib.study.jobs import job_environment

    plan = collect(runner, only, log)
    if not plan.units:
        raise StudyError(f"profile {runner.profile.name} trains nothing to submit; run it with "
                         "--executor local")
    plan.save(plan_path(runner))
    submitter = slurm.Submitter(runner.paths, options, job_environment(), log)
    book = submitter.book
    statuses = slurm.run_statuses(plan)
    queue = slurm.queue_states(book.job_ids())
    states = slurm.survey(plan, book, statuses, queue)
    notebooks_job = book.last_notebooks()
    notebooks_state = slurm.live_state(notebooks_job, queue)
    counts = {s: sum(st.state == s for st in states.values())
              for s in ("done", "pending", "running", "failed", "missing")}
    log(f"{len(plan.units)} job unit(s) for {len(statuses)} run(s): "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if counts["done"] == len(plan.units):
        if notebooks_state == "never":
            submitter.cancel(notebooks_job["job_id"])
        elif notebooks_state in ("pending", "running"):
            log(f"every run is done; the notebooks job {notebooks_job['job_id']} is "
                f"{notebooks_state}: it builds the report")
            return 0
        log("every run is done: executing the notebooks and the report here")
        return runner.run(only)
    new = submitter.submit_units(plan, states)
    live = [s.job_id for s in states.values() if s.state in ("pending", "running") and s.job_id]
    outside = [k for k, s in states.items() if s.state == "running" and not s.job_id]
    if notebooks_state == "never" or (new and notebooks_state in ("pending", "running")):
        submitter.cancel(notebooks_job["job_id"])  # it would not wait for the new jobs
        notebooks_state = "cancelled"
    if outside:
        log(f"  notebooks and report: not submitted while {len(outside)} unit(s) train outside "
            "this study's jobs (their runs' locks); run this command again once they are done")
    elif notebooks_state not in ("pending", "running"):
        job_id = submitter.submit_notebooks(runner.profile, runner.results_dir,
                                            live + list(new.values()), only)
        log(f"  notebooks and report: job {job_id}, after every run job")
    if not new:
        log("no run job submitted: every unit not done is pending or running")
    command = "python -m ckd_lib.study " + shlex.join(argv)
    where = ["--profile", runner.profile.reference]
    if runner.results_dir != "results":
        where += ["--results-dir", runner.results_dir]
    log(f"submitted {len(new)} run job(s); logs in {submitter.folder / 'logs'}\n"
        f"  where it stands:  python -m ckd_lib.study {shlex.join(where)} --status\n"
        f"  later, the same command submits what failed and, once every run is done, builds "
        f"the report:\n    {command}")
    return 0
