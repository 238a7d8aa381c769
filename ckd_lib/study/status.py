"""``--status``: done / running / pending / failed per run, from the records and SLURM.

Why a separate read-only view: after logging out, the user's one question is what finished, what
is still queued, and what failed and why, without submitting anything. A failed job's reason is
the end of its log (the engine's one-line error, or the traceback), shown under its runs.
"""

from __future__ import annotations

from ckd_lib.study import slurm
from ckd_lib.study.planning import Plan

ORDER = ("done", "diverged", "stale", "running", "pending", "failed", "not submitted")


def run_lines(plan: Plan, states: dict, statuses: dict) -> dict[str, list[tuple[str, str, str]]]:
    """notebook -> [(status, run id, where)] in plan order."""
    out: dict[str, list] = {}
    for unit in plan.units:
        state = states[unit.key]
        for run_id in unit.run_ids:
            status = {"complete": "done", "diverged": "diverged"}.get(statuses.get(run_id))
            if status is None and statuses.get(run_id) == "stale" and \
                    state.state in ("missing", "failed"):
                status = "stale"  # its record's inputs changed: the next submit trains it
            status = status or {"missing": "not submitted"}.get(state.state, state.state)
            where = f"job {state.job_id}" if state.job_id else ""
            if state.detail and status not in ("done", "diverged"):
                where = f"{where} ({state.detail})" if where else state.detail
            out.setdefault(unit.notebook, []).append((status, run_id, where))
    return out


def print_status(plan: Plan, runner, out=print) -> None:
    folder = slurm.slurm_dir(runner.paths)
    book = slurm.JobBook(folder / "jobs.json")
    statuses = slurm.run_statuses(plan)
    queue = slurm.queue_states(book.job_ids())
    states = slurm.survey(plan, book, statuses, queue)
    lines = run_lines(plan, states, statuses)
    counts = {s: sum(status == s for rows in lines.values() for status, _, _ in rows)
              for s in ORDER}
    out(f"profile {plan.profile}: {sum(counts.values())} run(s) in {len(plan.units)} job "
        "unit(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for notebook, rows in lines.items():
        out(notebook)
        for status, run_id, where in rows:
            out(f"  {status:<13} {run_id}  {where}".rstrip())
    failed = {states[u.key].job_id for u in plan.units if states[u.key].state == "failed"}
    for job_id in sorted(failed):
        path, tail = slurm.log_tail(folder / "logs", job_id)
        out(f"job {job_id} failed ({states_of(job_id, states)}); last lines of {path}:"
            if tail else f"job {job_id} failed ({states_of(job_id, states)}); no log at {path}")
        for line in tail:
            out(f"  | {line}")
    entry = book.last_notebooks()
    report = runner.paths.root / "report.html"
    state = slurm.live_state(entry, queue)
    if entry:
        words = {"never": "pending forever (a run job failed; the submit command replaces it)"}
        out(f"notebooks and report: job {entry['job_id']} {words.get(state, state.lower())}")
        if state not in ("pending", "running", "COMPLETED"):
            path, tail = slurm.log_tail(folder / "logs", entry["job_id"])
            for line in tail[-6:]:
                out(f"  | {line}")
    out(f"report: {report}" if report.is_file() else "report: not built yet")


def states_of(job_id: str, states: dict) -> str:
    return next((s.detail for s in states.values() if s.job_id == job_id), "")
