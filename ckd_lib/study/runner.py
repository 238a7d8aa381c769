"""The study runner: check a profile, then execute its notebooks with papermill, in order.

1. Plan: read every notebook's parameters cell (the ``.py`` jupytext scripts are the source) and
   check every parameter the profile gives it, before anything runs.
2. For each notebook: skip it when its executed copy completed from the same source, with the
   same parameters, after the same upstream notebooks (a small manifest in
   ``results/<profile>/executed/manifest.json`` says so); otherwise refresh the paired ``.ipynb``
   beside the script (JupyterLab opens it; outputs of unchanged cells are kept), execute the
   notebook with papermill into ``results/<profile>/executed/<name>.ipynb``, streaming its output
   to the terminal and to ``<name>.log``.
3. Stop at the first failure, naming the notebook, the cell and the error. Running again
   continues there: finished notebooks are skipped, and inside a notebook finished runs are
   skipped by the engine (their records), interrupted ones resume from their last epoch.
4. After the report notebook, publish the profile's pages: ``results/<profile>/report.html``
   (input cells hidden) and ``summary.csv``, each executed notebook as HTML, and the index of
   every profile's report, ``results/report.html``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from ckd_lib import results
from ckd_lib.study.params import (
    Parameter,
    ParameterError,
    check_parameters,
    notebook_parameters,
    read_notebook,
)
from ckd_lib.study.paths import StudyPaths, notebooks_dir, project_root
from ckd_lib.study.profiles import Profile, check_results_owner, claim_results

MANIFEST = "manifest.json"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def language_info() -> dict:
    """What the python3 kernel reports about its language: JupyterLab writes it into a notebook's
    metadata when the kernel starts, so a notebook that lacks it opens already "modified"."""
    try:
        from ipykernel.ipkernel import IPythonKernel

        return dict(IPythonKernel.language_info)
    except ImportError:
        return {"name": "python", "version": platform.python_version(),
                "mimetype": "text/x-python", "codemirror_mode": {"name": "ipython", "version": 3},
                "pygments_lexer": "ipython3", "nbconvert_exporter": "python",
                "file_extension": ".py"}


@dataclass
class Job:
    """One notebook of a profile, with its resolved, checked parameters (passed to papermill:
    the notebook resolves the same values from its profile, so they are no overrides there)."""

    name: str
    source: Path
    parameters: dict
    declared: dict[str, Parameter]

    @property
    def runner_set(self) -> set[str]:
        return {"profile", "results_dir", "devices"} & set(self.parameters)

    @property
    def source_sha256(self) -> str:
        return hashlib.sha256(self.source.read_bytes()).hexdigest()


class Tee:
    """A file-like object writing to several streams (the terminal and a log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()


def resolve_parameters(profile: Profile, declared: dict[str, dict[str, Parameter]],
                       results_dir: str, devices: list[str] | None) -> dict[str, dict]:
    """Each notebook's parameters as the notebook itself will resolve them
    (``ckd_lib.study.notebook``): the profile chain's values, then the runner's (profile,
    results_dir, devices). Raises a :class:`ParameterError` that lists every problem of the
    profile at once: unknown names, wrong types, parameters no profile of the chain sets."""
    problems = []
    out = {}
    for name in profile.notebooks:
        params = declared[name]
        values = profile.values_for(name, params)
        values.update(runner_values(params, profile.reference, results_dir, devices))
        try:
            check_parameters(values, params, name, origin=f"profile {profile.name}")
        except ParameterError as error:
            problems.append(str(error))
        missing = [k for k in params if values.get(k, params[k].default) is None]
        if missing:
            chain = " -> ".join(p.name for p in reversed(profile.chain()))
            problems.append(f"profile {chain}, notebook {name}: no value for {missing}")
        out[name] = values
    used = {k for name in profile.notebooks for k in declared[name]}
    unused = sorted(set(profile.common) - used)  # an inherited value may serve other notebooks
    if unused:
        problems.append(f"profile {profile.name}, common: parameter(s) {unused} are declared by "
                        f"none of its notebooks {list(profile.notebooks)}")
    if problems:
        raise ParameterError("\n".join(problems))
    return out


def runner_values(declared: dict, profile: str, results_dir: str,
                  devices: list[str] | None) -> dict:
    """What the runner passes to a notebook explicitly: its profile and results folder, and the
    devices of ``--devices``; the notebook resolves everything else from the profile."""
    values = {}
    if "profile" in declared:
        values["profile"] = profile
    if "results_dir" in declared:
        values["results_dir"] = str(results_dir)
    if devices is not None and "devices" in declared:
        values["devices"] = list(devices)
    return values


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Runner:
    """Executes a profile's notebooks; see the module docstring."""

    def __init__(self, profile: Profile, results_dir: str | Path = "results",
                 notebooks: Path | None = None, devices: list[str] | None = None,
                 force: bool = False, kernel_name: str = "python3",
                 log: Callable[[str], None] = print, stdout=None, stderr=None,
                 export_report: bool = True, sync_pairs: bool = True):
        self.profile = profile
        self.results_dir = str(results_dir)
        self.paths = StudyPaths.of(profile.name, results_dir)
        self.notebooks = Path(notebooks) if notebooks else notebooks_dir()
        self.devices = devices
        self.force = force
        self.kernel_name = kernel_name
        self.log = log
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.export_report = export_report
        self.sync_pairs = sync_pairs

    # -- plan -------------------------------------------------------------------------------
    def plan(self, only: list[str] | None = None) -> list[Job]:
        """Every notebook of the profile, parameters checked; then the ``only`` selection."""
        missing = [n for n in self.profile.notebooks if not (self.notebooks / f"{n}.py").is_file()]
        if missing:
            raise ParameterError(f"profile {self.profile.name}: notebook(s) {missing} not found in "
                                 f"{self.notebooks} (expected <name>.py jupytext scripts)")
        if only:
            unknown = [n for n in only if n not in self.profile.notebooks]
            if unknown:
                raise ParameterError(f"--only {unknown}: not in profile {self.profile.name}; its "
                                     f"notebooks: {list(self.profile.notebooks)}")
        check_results_owner(self.profile, self.results_dir)  # a folder of another profile file
        declared = {n: notebook_parameters(self.notebooks / f"{n}.py", where=n)
                    for n in self.profile.notebooks}
        values = resolve_parameters(self.profile, declared, self.results_dir, self.devices)
        jobs = [Job(n, self.notebooks / f"{n}.py", values[n], declared[n])
                for n in self.profile.notebooks]
        return [j for j in jobs if not only or j.name in only]

    def check(self, only: list[str] | None = None):
        """:meth:`plan`, then every run the notebooks would train, validated by executing them
        in plan mode up to their training calls (``ckd_lib.study.planning``; seconds): what
        would fail inside a notebook after others ran fails here, before any runs. Returns the
        jobs and the plan (``planning.Plan``)."""
        from ckd_lib.study import planning

        jobs = self.plan(only)
        return jobs, planning.collect(self, only, check=True)

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.paths.executed / MANIFEST

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text()).get("notebooks", {})
        except (OSError, json.JSONDecodeError):
            return {}

    def _save_manifest(self, entries: dict) -> None:
        results.atomic_write_json(self.manifest_path, {"profile": self.profile.name,
                                                       "notebooks": entries})
        self.manifest_path.chmod(0o644)

    def upstream(self, name: str, entries: dict) -> str:
        """A token of the notebooks before ``name`` in the profile: when one of them executes
        again, the notebooks after it are no longer up to date."""
        before = []
        for other in self.profile.notebooks:
            if other == name:
                break
            entry = entries.get(other) or {}
            before.append([other, entry.get("finished"), entry.get("status")])
        return hashlib.sha256(json.dumps(before).encode()).hexdigest()[:16]

    def executed_path(self, name: str) -> Path:
        return self.paths.executed / f"{name}.ipynb"

    def is_up_to_date(self, job: Job, entries: dict) -> bool:
        entry = entries.get(job.name)
        return (not self.force and entry is not None and entry.get("status") == "complete"
                and entry.get("source_sha256") == job.source_sha256
                and entry.get("parameters") == json.loads(json.dumps(job.parameters))
                and entry.get("upstream") == self.upstream(job.name, entries)
                and self.executed_path(job.name).is_file())

    # -- run ----------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None) -> int:
        """Execute the (selected) notebooks; 0 on success, 1 at the first failure."""
        from ckd_lib.methods import load_plugins

        load_plugins(self.profile.plugins)  # exported in CKD_PLUGINS to the kernels and workers
        jobs, _ = self.check(only)
        claim_results(self.profile, self.results_dir)  # results/<name>/profile.json
        started = time.perf_counter()
        executed = skipped = 0
        for index, job in enumerate(jobs, 1):
            entries = self.manifest()
            head = f"[{index}/{len(jobs)}] {job.name}"
            if self.is_up_to_date(job, entries):
                self.log(f"{head}: up to date, skipped ({self.executed_path(job.name)}; "
                         f"--force re-executes)")
                skipped += 1
                continue
            self.log(f"{head}: executing with {json.dumps(job.parameters, default=str)}")
            ok = self.execute(job, entries)
            if not ok:
                return 1
            executed += 1
            if self.export_report and job.name == self.profile.report:
                self.publish_report(job.name)
        minutes = (time.perf_counter() - started) / 60
        self.log(f"profile {self.profile.name}: {executed} notebook(s) executed, {skipped} "
                 f"up to date, {minutes:.1f} min; results in {self.paths.root}")
        return 0

    def execute(self, job: Job, entries: dict) -> bool:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        nb = read_notebook(job.source)
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        if self.sync_pairs:
            sync_paired_notebook(job.source, nb)
        out = self.executed_path(job.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        entry = {"status": "running", "source": str(job.source),
                 "source_sha256": job.source_sha256,
                 "parameters": json.loads(json.dumps(job.parameters)),
                 "upstream": self.upstream(job.name, entries), "started": _now(),
                 "executed": str(out)}
        entries[job.name] = entry
        self._save_manifest(entries)
        t0 = time.perf_counter()
        log_path = out.with_suffix(".log")
        error = None
        with open(log_path, "w") as log_file:
            try:
                papermill.execute_notebook(
                    nb, str(out), parameters=job.parameters, kernel_name=self.kernel_name,
                    cwd=str(project_root()), progress_bar=False, log_output=False,
                    stdout_file=Tee(self.stdout, log_file), stderr_file=Tee(self.stderr, log_file),
                    start_timeout=180)
            except PapermillExecutionError as exc:
                error = (f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}")
            except Exception as exc:  # kernel died, could not start, a full disk, ...
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    error = str(results.disk_full(Path(exc.filename or out), None))
        entry.update(finished=_now(), seconds=round(time.perf_counter() - t0, 1))
        if error:
            entry.update(status="failed", error=error)
            self._save_manifest(entries)
            self.log(f"FAILED: notebook {job.name}: {error}\n"
                     f"  executed copy with the traceback: {out}\n  log: {log_path}\n"
                     f"  fix the cause and run the same command again: finished notebooks and "
                     f"runs are kept and skipped.")
            return False
        entry["status"] = "complete"
        self._save_manifest(entries)
        self.log(f"{job.name}: done in {entry['seconds']:.0f} s -> {out}")
        return True

    def publish_report(self, name: str) -> None:
        """The executed report notebook's pages (``ckd_lib.report.build.publish``):
        results/<profile>/report.html and summary.csv, every executed notebook as HTML beside
        it, and results/report.html, the index of every profile's report."""
        from ckd_lib.report.build import publish

        html = publish(self.profile.name, self.paths.results_dir, self.executed_path(name))
        self.log(f"report: {html} (every profile's report: "
                 f"{self.paths.results_dir / 'report.html'})")


def sync_paired_notebook(source: Path, nb: nbformat.NotebookNode | None = None) -> Path:
    """Write ``<name>.ipynb`` beside the jupytext script ``<name>.py`` (the script is the source
    of truth; outputs of the existing .ipynb are kept where its cells are unchanged). Returns the
    .ipynb path; unchanged inputs leave the file untouched."""
    import jupytext
    from jupytext.combine import combine_inputs_with_outputs

    nb = nb if nb is not None else read_notebook(source)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = language_info()
    target = source.with_suffix(".ipynb")
    if target.is_file():
        try:
            old = nbformat.read(target, as_version=4)
        except Exception:  # unreadable: regenerate
            old = None
        if old is not None:
            same_cells = [(c.cell_type, c.source) for c in old.cells] == \
                [(c.cell_type, c.source) for c in nb.cells]
            if same_cells and old.metadata.get("language_info") == nb.metadata["language_info"]:
                return target
            if not same_cells and target.stat().st_mtime > source.stat().st_mtime:
                # edited as .ipynb without jupytext's pairing: keep those edits somewhere
                backup = target.with_suffix(".ipynb.bak")
                shutil.copyfile(target, backup)
                print(f"note: {target} had edits that {source.name} lacks (jupytext pairing "
                      f"inactive?); it is regenerated from {source.name}, the old copy kept as "
                      f"{backup}")
            metadata = dict(nb.metadata)
            nb = combine_inputs_with_outputs(nb, old, fmt="py:percent")
            # the outputs' notebook brings its own metadata: the kernel's must win, or a file
            # without language_info is rewritten without it forever (and opens modified)
            nb.metadata.update(kernelspec=metadata["kernelspec"],
                               language_info=metadata["language_info"])
    jupytext.write(nb, target, fmt="ipynb")
    return target
