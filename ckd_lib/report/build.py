"""Building the report: the notebook's data (`prepare`), the HTML (`build_html`), publishing a
profile's pages (`publish`) and the whole thing from the command line (`build_report`).

``build_report(profile, results_dir)`` executes ``notebooks/90_report.py`` (jupytext → papermill)
into ``results/<profile>/executed/90_report.ipynb``; ``publish`` (also what the study runner calls
after the report notebook) converts it into ``results/<profile>/report.html`` (input cells
hidden), renders every executed notebook of the profile to ``executed/<name>.html`` for the
record, and rewrites the index of all profiles' reports, ``results/report.html``. No page loads
anything from the network. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ckd_lib import results
from ckd_lib.report.claims import ClaimContext, Evidence, evaluate, verdict_counts
from ckd_lib.report.collect import Study, load_study
from ckd_lib.report.compute import ComputeRow, compute_used
from ckd_lib.report.index import write_index, write_meta
from ckd_lib.report.literature import SourceIndex
from ckd_lib.report.provenance import (
    REPORT_NOTEBOOK,
    Provenance,
    collect_provenance,
    table_commands,
)
from ckd_lib.report.reproduction import Summary, summarise
from ckd_lib.report.tables import ReportTables, build_tables, summary_frame

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

# nbconvert's lab template without the blocks that load require.js, MathJax, mermaid and the
# widget manager from a CDN: the pages hold no JavaScript, so they open offline without errors
# (LaTeX in markdown cells then shows as its source).
_TEMPLATE_NAME = "ckd_offline.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


@dataclass
class Report:
    """Everything the report notebook shows, computed once from the records."""

    study: Study
    tables: ReportTables
    provenance: Provenance
    commands: dict[str, dict]
    sources: SourceIndex
    claims: list[Evidence]
    compute: list[ComputeRow]
    reproduction: Summary

    @property
    def profile(self) -> str:
        return self.study.profile

    def summary(self) -> pd.DataFrame:
        return summary_frame(self.tables, {k: " or ".join(v["commands"])
                                           for k, v in self.commands.items()})

    def claims_frame(self) -> pd.DataFrame:
        """One row per comparison of every claim (a claim without runs: one row saying so)."""
        rows = []
        for e in self.claims:
            for c in e.comparisons or [None]:
                diff = c.diff if c is not None else None
                rows.append({
                    "claim": e.claim.key, "statement": e.claim.statement,
                    "claim_verdict": e.verdict.verdict, "claim_reason": e.verdict.reason,
                    "comparison": c.label if c else "", "budget": c.budget if c else "",
                    "unit": c.unit if c else "",
                    "mean": round(diff.mean, 4) if diff is not None and diff.n else "",
                    "ci95_low": round(diff.low, 4) if diff is not None and diff.has_interval
                    else "",
                    "ci95_high": round(diff.high, 4) if diff is not None and diff.has_interval
                    else "",
                    "n": diff.n if diff is not None else 0,
                    "seeds": " ".join(map(str, diff.seeds)) if diff is not None else "",
                    "verdict": c.verdict.verdict if c else e.verdict.verdict,
                    "reason": c.verdict.reason if c else e.verdict.reason,
                    "run_ids": " ".join(c.run_ids) if c else ""})
        return pd.DataFrame(rows)

    def write_summary(self, path: str | Path | None = None) -> Path:
        """results/<profile>/summary.csv (one row per table cell) and claims.csv beside it (one
        row per comparison of each claim), written atomically."""
        path = Path(path) if path else self.study.results_dir / self.profile / "summary.csv"
        results.atomic_write_bytes(path, self.summary().to_csv(index=False).encode())
        results.atomic_write_bytes(path.with_name("claims.csv"),
                                   self.claims_frame().to_csv(index=False).encode())
        return path


def prepare(profile: str = "demo", results_dir: str | Path = "results",
            paper_numbers_csv: str | Path | None = None) -> Report:
    """Read the records of `profile` and compute the tables, provenance and commands."""
    from ckd_lib.report.artifacts import artifact_files, read_artifact
    from ckd_lib.report.detection import detection_frame

    study = load_study(profile, results_dir, paper_numbers_csv=paper_numbers_csv)
    tables = build_tables(study)
    efficiency = [read_artifact(p) for p in artifact_files(study, "efficiency", ".json")]
    efficiency = [e for e in efficiency if isinstance(e, dict) and isinstance(e.get("rows"), list)]
    context = ClaimContext(study, tables, efficiency[0] if efficiency else None,
                           detection_frame(results_dir, profile))
    claims = evaluate(context)
    compute = compute_used(study, tables)
    return Report(study=study, tables=tables, provenance=collect_provenance(study),
                  commands=table_commands(study, tables.all()), sources=SourceIndex(),
                  claims=claims, compute=compute,
                  reproduction=summarise(study, tables, claims, compute))


def build_html(executed_notebook: str | Path, out_html: str | Path, *, title: str | None = None,
               show_input: bool = False) -> Path:
    """Convert an executed notebook to a self-contained HTML page that loads nothing from the
    network; input cells hidden unless `show_input`. Written atomically."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                            exclude_input=not show_input, exclude_input_prompt=not show_input,
                            exclude_output_prompt=True)
    exporter.template_file = _TEMPLATE_NAME
    title = title or nb.metadata.get("title") or Path(executed_notebook).stem
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    out_html = Path(out_html)
    results.atomic_write_bytes(out_html, body.encode("utf-8"))
    return out_html


def render_executed(executed_dir: Path) -> list[Path]:
    """Every executed notebook of a profile (the report's own excepted) as ``<name>.html`` beside
    it, inputs shown: the record of what ran, readable without Jupyter and offline."""
    return [build_html(nb, nb.with_suffix(".html"), show_input=True,
                       title=f"{nb.stem} (executed, profile {executed_dir.parent.name})")
            for nb in sorted(executed_dir.glob("[!.]*.ipynb")) if nb.stem != REPORT_NOTEBOOK]


def headline(study: Study) -> tuple[str, int, int]:
    """What a profile's report is, in one line, with its classification and detection run counts
    (for the index of reports)."""
    from ckd_lib.report.detection import detection_frame, detection_headline
    from ckd_lib.report.html import banner

    coco = detection_frame(study.results_dir, study.profile)
    lines = [banner(study)[0]] if not study.empty or coco.empty else []
    if not coco.empty:
        lines.append(detection_headline(coco)[0])
    return " / ".join(lines), len(study.frame), len(coco)


def _papermill_parameters(executed: Path) -> dict:
    import nbformat

    return dict(nbformat.read(str(executed), as_version=4).metadata.get("papermill", {})
                .get("parameters", {}))


def publish(profile: str, results_dir: str | Path, executed: str | Path | None = None,
            paper_numbers_csv: str | Path | None = None) -> Path:
    """The pages of a profile whose report notebook has run: results/<profile>/report.html,
    summary.csv, executed/<name>.html, report.json, and the index results/report.html.
    Returns the path of the profile's report."""
    results_dir = Path(results_dir)
    profile_dir = results_dir / profile
    executed = Path(executed) if executed else profile_dir / "executed" / f"{REPORT_NOTEBOOK}.ipynb"
    if paper_numbers_csv is None:  # what the notebook was given, so summary.csv says the same
        paper_numbers_csv = _papermill_parameters(executed).get("paper_numbers_csv")
    report = build_html(executed, profile_dir / "report.html", title=f"CKD study report: {profile}")
    render_executed(executed.parent)
    data = prepare(profile, results_dir, paper_numbers_csv)
    data.write_summary()
    line, runs, detection_runs = headline(data.study)
    counts = verdict_counts(data.claims)
    line += " — claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    write_meta(profile_dir, line, runs, detection_runs)
    write_index(results_dir)
    return report


def report_notebook_path() -> Path:
    return NOTEBOOKS_DIR / f"{REPORT_NOTEBOOK}.py"


def execute_report_notebook(profile: str, results_dir: str | Path, paper_numbers_csv: str | Path,
                            kernel_name: str = "python3", timeout: int | None = 1800) -> Path:
    """Run notebooks/90_report.py with papermill into results/<profile>/executed/90_report.ipynb."""
    import jupytext
    import nbformat
    import papermill

    source = report_notebook_path()
    if not source.is_file():
        raise FileNotFoundError(f"report notebook not found: {source}")
    executed_dir = Path(results_dir) / profile / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    out = executed_dir / f"{REPORT_NOTEBOOK}.ipynb"
    nb = jupytext.read(source)
    from ckd_lib.study.runner import KERNELSPEC, language_info

    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = language_info()
    with tempfile.TemporaryDirectory(prefix="ckd_report_") as tmp:
        src_ipynb = Path(tmp) / f"{REPORT_NOTEBOOK}.ipynb"
        nbformat.write(nb, str(src_ipynb))
        fd, partial = tempfile.mkstemp(dir=executed_dir, prefix=f".{REPORT_NOTEBOOK}.",
                                       suffix=".ipynb")
        os.close(fd)
        try:
            papermill.execute_notebook(
                str(src_ipynb), partial,
                parameters={"profile": profile, "results_dir": str(results_dir),
                            "paper_numbers_csv": str(paper_numbers_csv)},
                kernel_name=kernel_name, cwd=os.getcwd(), progress_bar=False,
                log_output=False, execution_timeout=timeout)
        finally:
            # a failed run's notebook (with the error in it) is kept too: it says what went wrong
            if Path(partial).is_file() and Path(partial).stat().st_size:
                os.chmod(partial, 0o644)
                os.replace(partial, out)
            Path(partial).unlink(missing_ok=True)
    return out


def build_report(profile: str = "demo", results_dir: str | Path = "results", *,
                 paper_numbers_csv: str | Path | None = None, kernel_name: str = "python3",
                 timeout: int | None = 1800) -> Path:
    """Execute the report notebook for `profile`, then :func:`publish` its pages. Returns the
    path of results/<profile>/report.html."""
    results_dir = Path(results_dir)
    if not paper_numbers_csv:
        paper_numbers_csv = results_dir / "paper_numbers.csv"
    executed = execute_report_notebook(profile, results_dir, paper_numbers_csv,
                                       kernel_name=kernel_name, timeout=timeout)
    return publish(profile, results_dir, executed, paper_numbers_csv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ckd_lib.report",
        description="Build results/<profile>/report.html and summary.csv from the run records "
                    "of one profile (executes notebooks/90_report.py), and the index of every "
                    "profile's report, results/report.html.")
    parser.add_argument("--profile", default="demo", help="profile whose records to report")
    parser.add_argument("--results-dir", default="results", help="the study's results folder")
    parser.add_argument("--paper-numbers", default=None,
                        help="CSV of the CKD paper's own numbers "
                             "(default: <results-dir>/paper_numbers.csv)")
    args = parser.parse_args(argv)
    out = build_report(args.profile, args.results_dir, paper_numbers_csv=args.paper_numbers)
    print(out)
    return 0
