"""A study on a SLURM cluster: submit the plan's units through submitit, and see where they are.

Layout. One job per unit of the plan (``ckd_lib.study.planning``: a group of students sharing a
teacher, or one detection run), a multi-task job when the unit has several processes (its
``torch.distributed`` rendezvous comes from SLURM, ``ckd_lib.study.jobs``). Units of one notebook
that wait for the same teachers are submitted together as one job array (``executor.batch()``).
A unit whose teacher is trained by another unit depends on that unit's job (``afterok``), so
teachers run before their students. Last, one job executes the notebooks and the report once
every run job has succeeded (``afterok`` on all of them).

Bookkeeping, under ``results/<profile>/slurm/``: ``plan.json`` (the plan last submitted),
``jobs.json`` (per unit, the jobs submitted for it, newest last; the notebooks jobs) and
``logs/`` (submitit's folder: each job's pickles and logs). What a unit needs now is decided from
the run records first (complete or diverged: done), then SLURM (squeue, or sacct once squeue has
forgotten a job: pending or running), then the runs' locks (another process trains it); a unit
whose last job ended without its records, or waits for a job that failed (SLURM keeps it pending
forever), is failed and is submitted again by the next submit (the old job cancelled), as is a
unit never submitted. A pending or running unit is never submitted twice.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ckd_lib import results
from ckd_lib.engine.bookkeeping import RunBook, RunLock
from ckd_lib.errors import InputError
from ckd_lib.study.paths import StudyPaths
from ckd_lib.study.plan import StudyError
from ckd_lib.study.planning import Plan, Unit
from ckd_lib.study.slurm_options import SlurmOptions

PENDING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD")
RUNNING = ("RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING",
           "STAGE_OUT", "STOPPED")
DONE = ("complete", "diverged")
NEVER = "DependencyNeverSatisfied"  # pending forever: a job it waits for failed


def slurm_dir(paths: StudyPaths) -> Path:
    return paths.root / "slurm"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobBook:
    """``jobs.json``: the jobs submitted per unit key, and the notebooks jobs, newest last."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.data = {}
        self.data.setdefault("units", {})
        self.data.setdefault("notebooks", [])

    def last(self, key: str) -> dict | None:
        jobs = self.data["units"].get(key)
        return jobs[-1] if jobs else None

    def last_notebooks(self) -> dict | None:
        return self.data["notebooks"][-1] if self.data["notebooks"] else None

    def add(self, key: str | None, job_id: str, **details) -> None:
        entry = {"job_id": job_id, "submitted": _now(), **details}
        if key is None:
            self.data["notebooks"].append(entry)
        else:
            self.data["units"].setdefault(key, []).append(entry)

    def job_ids(self) -> list[str]:
        ids = [jobs[-1]["job_id"] for jobs in self.data["units"].values() if jobs]
        return ids + [j["job_id"] for j in self.data["notebooks"][-1:]]

    def save(self) -> None:
        results.atomic_write_json(self.path, self.data)


# -- what SLURM says ------------------------------------------------------------------------------
def _run(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def parse_table(text: str) -> dict[str, tuple[str, str]]:
    """``JOBID|STATE[|REASON]`` lines (squeue, sacct --parsable2) -> {job id: (state, reason)};
    job steps (``123.0``, ``123.batch``) are left out, ``CANCELLED by 0`` is ``CANCELLED``."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0] or parts[0] == "JobID":
            continue
        out[parts[0]] = (parts[1].split()[0] if parts[1] else "UNKNOWN",
                         parts[2] if len(parts) > 2 else "")
    return out


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from squeue (every state; array tasks one by one), then sacct
    for the jobs squeue has forgotten (when accounting is enabled); absent when neither knows."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    if not bases:
        return {}
    out = parse_table(_run(["squeue", "--noheader", "--states=all", "--array",
                            "--format=%i|%T|%r", f"--jobs={','.join(bases)}"]) or "")
    missing = sorted({j.split("_")[0] for j in job_ids if j not in out})
    if missing:
        found = parse_table(_run(["sacct", "--noheader", "--parsable2", "--allocations",
                                  "--format=JobID,State", f"--jobs={','.join(missing)}"]) or "")
        out.update({k: v for k, v in found.items() if k not in out})
    return out


def log_tail(folder: Path, job_id: str, lines: int = 12) -> tuple[Path, list[str]]:
    """The last lines of a job's stderr (its traceback), else of its stdout."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=0)
    for path in (paths.stderr, paths.stdout):
        try:
            text = [line for line in path.read_text(errors="replace").splitlines()
                    if line.strip()]
        except OSError:
            continue
        if text:
            return path, text[-lines:]
    return paths.stderr, []


# -- where each unit stands -----------------------------------------------------------------------
@dataclass
class UnitState:
    state: str  # done, running, pending, failed, missing
    job_id: str | None = None
    detail: str = ""


def run_statuses(plan: Plan) -> dict[str, str]:
    """run id -> "complete", "diverged" (from its record, checked against its model and the
    inputs it would use now, as the engine checks it), "stale" (a record computed from other
    inputs: trained again) or "". Moves nothing."""
    out = {}
    for unit in plan.units:
        for run, config in zip(unit.runs, unit.configs, strict=True):
            book = RunBook.for_config(unit_config(unit.task, config))
            record = book.finished(log=None, move_aside=False)
            out[run["run_id"]] = record["status"] if record else ""
            if record is None and book.identity is not None and book.record_path.is_file():
                try:
                    old = results.read_record(book.record_path)
                except InputError:
                    continue
                if old["config_hash"] == run["config_hash"] and \
                        book.identity.stale_reasons(old):
                    out[run["run_id"]] = "stale"
    return out


def unit_config(task: str, data: dict):
    """A plan unit's config dict as the config class of its task."""
    if task == "detection":
        from ckd_lib.detection.config import DetectionConfig

        return DetectionConfig.from_dict(data)
    from ckd_lib.config import RunConfig

    return RunConfig.from_dict(data)


def _lock_holder(run: dict) -> str | None:
    path = RunBook(run["out_dir"], run["run_id"], run["config_hash"]).lock_path
    state = RunLock.inspect(path)
    if state is None or state.stale:
        return None
    if state.holder:
        return f"lock held by process {state.holder['pid']} on {state.holder['host']}"
    return f"lock: {state.describe()}"


def survey(plan: Plan, book: JobBook, statuses: dict[str, str],
           queue: dict[str, tuple[str, str]]) -> dict[str, UnitState]:
    """Each unit's state; see the module docstring for the order of the evidence."""
    out = {}
    for unit in plan.units:
        entry = book.last(unit.key)
        job_id = entry["job_id"] if entry else None
        state, reason = queue.get(job_id, ("", "")) if job_id else ("", "")
        if all(statuses.get(r) in DONE for r in unit.run_ids):
            out[unit.key] = UnitState("done", job_id)
        elif state in PENDING and reason != NEVER:
            out[unit.key] = UnitState("pending", job_id, reason if reason != "None" else "")
        elif state in RUNNING:
            out[unit.key] = UnitState("running", job_id, "" if state == "RUNNING" else
                                      state.lower())
        elif holders := [h for h in map(_lock_holder, unit.runs) if h]:
            out[unit.key] = UnitState("running", None, holders[0])  # outside this study's jobs
        elif job_id:  # ended without its records, or waits for a job that failed
            out[unit.key] = UnitState("failed", job_id, reason if state in PENDING else
                                      state or "ended")
        else:
            out[unit.key] = UnitState("missing")
    return out


def live_state(book_entry: dict | None, queue: dict) -> str:
    """"pending"/"running"/the final state of a notebooks job, "" when none was submitted. A
    job whose dependencies failed waits forever: "never" (SLURM keeps it pending)."""
    if not book_entry:
        return ""
    state, reason = queue.get(book_entry["job_id"], ("ENDED", ""))
    if state in PENDING:
        return "never" if reason == NEVER else "pending"
    return "running" if state in RUNNING else state


# -- submitting ------------------------------------------------------------------------------------
class Submitter:
    """Submits the units a plan still needs, teachers first, then the notebooks job."""

    def __init__(self, paths: StudyPaths, options: SlurmOptions, environment: dict,
                 log: Callable[[str], None] = print):
        self.paths = paths
        self.folder = slurm_dir(paths)
        self.options = options
        self.environment = environment
        self.log = log
        self.book = JobBook(self.folder / "jobs.json")

    def _executor(self, params: dict):
        try:
            import submitit
        except ImportError:
            raise StudyError("--executor slurm needs submitit: pip install 'ckd_lib[cluster]'"
                             ) from None
        try:
            executor = submitit.SlurmExecutor(folder=self.folder / "logs",
                                              max_num_timeout=self.options.max_requeues)
        except RuntimeError as error:  # no srun on this machine
            raise StudyError(f"--executor slurm: {error}") from None
        executor.update_parameters(**params)
        return executor

    def submit_jobs(self, name: str, processes: int, dependency: list[str], callables: list):
        """One job, or one array of jobs, with the same resources and dependencies."""
        params = self.options.sbatch_parameters(processes, name)
        if dependency:
            params["dependency"] = "afterok:" + ":".join(dependency)
        executor = self._executor(params)
        try:
            if len(callables) == 1:
                return [executor.submit(callables[0]).job_id]
            with executor.batch():
                jobs = [executor.submit(c) for c in callables]
            return [job.job_id for job in jobs]
        except Exception as error:  # noqa: BLE001 - sbatch refused: its message, one line
            text = " ".join(str(error).split())
            raise StudyError(f"sbatch refused job {name}: {text[:500]}") from None

    def submit_units(self, plan: Plan, states: dict[str, UnitState]) -> dict[str, str]:
        """Submit every failed or missing unit; {unit key: job id} of the new jobs."""
        from ckd_lib.study.jobs import UnitJob

        job_of = {k: s.job_id for k, s in states.items() if s.state in ("pending", "running")
                  and s.job_id}
        waiting = [u for u in plan.units if states[u.key].state in ("failed", "missing")]
        for unit in waiting:  # still queued, waiting for a job that failed: replaced below
            if states[unit.key].detail == NEVER:
                self.cancel(states[unit.key].job_id)
        new: dict[str, str] = {}
        while waiting:
            ready, blocked = [], []
            queued = {u.key for u in waiting}
            for unit in waiting:
                deps = [d for d in plan.dependencies(unit) if states[d].state != "done"]
                if all(d in job_of for d in deps):
                    ready.append((unit, sorted(job_of[d] for d in deps)))
                elif any(d not in job_of and d not in queued for d in deps):
                    self.log(f"not submitted: {unit.notebook} {', '.join(unit.run_ids)}: its "
                             "teacher is being trained outside this study's jobs")
                else:
                    blocked.append(unit)
            if not ready:
                break
            batches: dict[tuple, list[Unit]] = {}
            for unit, deps in ready:
                batches.setdefault((unit.notebook, unit.processes, tuple(deps)), []).append(unit)
            for (notebook, processes, deps), units in batches.items():
                name = f"ckd-{plan.profile}-{notebook}"
                ids = self.submit_jobs(name, processes, list(deps), [
                    UnitJob(_unit_dict(u), self.environment, self.options.lock_wait_s)
                    for u in units])
                for unit, job_id in zip(units, ids, strict=True):
                    job_of[unit.key] = new[unit.key] = job_id
                    self.book.add(unit.key, job_id, notebook=notebook, runs=unit.run_ids)
                self.book.save()
                after = f" (after {', '.join(deps)})" if deps else ""
                self.log(f"  {notebook}: {len(units)} job(s) {_span(ids)}{after}")
            waiting = blocked
        return new

    def submit_notebooks(self, profile, results_dir: str, after: list[str],
                         only: list[str] | None) -> str:
        from ckd_lib.study.jobs import NotebooksJob

        job = NotebooksJob(str(profile.path), results_dir, self.environment, only)
        (job_id,) = self.submit_jobs(f"ckd-{profile.name}-notebooks", 1, sorted(after), [job])
        self.book.add(None, job_id, after=sorted(after))
        self.book.save()
        return job_id

    def cancel(self, job_id: str) -> None:
        _run(["scancel", job_id])


def _unit_dict(unit: Unit) -> dict:
    return {"notebook": unit.notebook, "task": unit.task, "configs": unit.configs,
            "runs": unit.runs, "processes": unit.processes}


def _span(ids: list[str]) -> str:
    """``["12_0", "12_1", "12_2"]`` -> ``12_[0-2]``; a single job id as it is."""
    if len(ids) > 1 and all("_" in i for i in ids) and len({i.split("_")[0] for i in ids}) == 1:
        tasks = [i.split("_")[1] for i in ids]
        return f"{ids[0].split('_')[0]}_[{tasks[0]}-{tasks[-1]}]"
    return ", ".join(ids)
