"""Building the report: the notebook's data (`prepare`), the HTML (`build_html`) and the whole
thing from the command line or the study runner (`build_report`).

``build_report(profile, results_dir)`` executes ``notebooks/90_report.py`` (jupytext → papermill)
into ``results/<profile>/executed/90_report.ipynb``, converts it with nbconvert (input cells
hidden, no JavaScript from the network) into ``results/<profile>/report.html`` and
``results/report.html``, and copies ``results/<profile>/summary.csv`` to ``results/summary.csv``.
Every file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ckd_lib import results
from ckd_lib.report.collect import Study, load_study
from ckd_lib.report.literature import SourceIndex
from ckd_lib.report.provenance import Provenance, collect_provenance, table_commands
from ckd_lib.report.tables import ReportTables, build_tables, summary_frame

REPORT_NOTEBOOK = "90_report"
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

# nbconvert's lab template, without the <script> tags that fetch require.js, MathJax and mermaid
# from a CDN: the report holds no JavaScript, so it opens offline without console errors.
_TEMPLATE_NAME = "ckd_report.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


@dataclass
class Report:
    """Everything the report notebook shows, computed once from the records."""

    study: Study
    tables: ReportTables
    provenance: Provenance
    commands: dict[str, dict]
    sources: SourceIndex

    @property
    def profile(self) -> str:
        return self.study.profile

    def summary(self) -> pd.DataFrame:
        return summary_frame(self.tables, {k: " | ".join(v["commands"])
                                           for k, v in self.commands.items()})

    def write_summary(self, path: str | Path | None = None) -> Path:
        """results/<profile>/summary.csv (one row per table cell), written atomically."""
        path = Path(path) if path else self.study.results_dir / self.profile / "summary.csv"
        results.atomic_write_bytes(path, self.summary().to_csv(index=False).encode())
        return path


def prepare(profile: str = "demo", results_dir: str | Path = "results",
            paper_numbers_csv: str | Path | None = None) -> Report:
    """Read the records of `profile` and compute the tables, provenance and commands."""
    study = load_study(profile, results_dir, paper_numbers_csv=paper_numbers_csv)
    tables = build_tables(study)
    return Report(study=study, tables=tables, provenance=collect_provenance(study),
                  commands=table_commands(study, tables.all()), sources=SourceIndex())


def build_html(executed_notebook: str | Path, out_html: str | Path, *,
               base_href: str | None = None) -> Path:
    """Convert an executed notebook to a self-contained HTML page with the input cells hidden.

    `base_href` (e.g. "../") is set as the page's <base> so that links written relative to the
    results folder also work from a copy one folder down. Written atomically.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.template_file = _TEMPLATE_NAME
    title = nb.metadata.get("title") or "CKD study report"
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    if base_href:
        body = body.replace("<head>", f'<head>\n<base href="{base_href}">', 1)
    out_html = Path(out_html)
    results.atomic_write_bytes(out_html, body.encode("utf-8"))
    return out_html


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
    """Execute the report notebook for `profile`, then write the HTML and summary.csv.

    Writes results/<profile>/executed/90_report.ipynb, results/<profile>/report.html,
    results/<profile>/summary.csv, results/report.html and results/summary.csv (the last two:
    the last profile built). Returns the path of results/report.html.
    """
    results_dir = Path(results_dir)
    if not paper_numbers_csv:
        paper_numbers_csv = results_dir / "paper_numbers.csv"
    started = time.time()
    executed = execute_report_notebook(profile, results_dir, paper_numbers_csv,
                                       kernel_name=kernel_name, timeout=timeout)
    profile_dir = results_dir / profile
    build_html(executed, profile_dir / "report.html", base_href="../")
    out = build_html(executed, results_dir / "report.html")
    summary = profile_dir / "summary.csv"
    if not summary.is_file() or summary.stat().st_mtime < started - 1:
        # the notebook writes it; an edited notebook may not have
        prepare(profile, results_dir, paper_numbers_csv).write_summary(summary)
    results.atomic_write_bytes(results_dir / "summary.csv", summary.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ckd_lib.report",
        description="Build results/report.html and results/summary.csv from the run records "
                    "of one profile (executes notebooks/90_report.py).")
    parser.add_argument("--profile", default="demo", help="profile whose records to report")
    parser.add_argument("--results-dir", default="results", help="the study's results folder")
    parser.add_argument("--paper-numbers", default=None,
                        help="CSV of the CKD paper's own numbers "
                             "(default: <results-dir>/paper_numbers.csv)")
    args = parser.parse_args(argv)
    out = build_report(args.profile, args.results_dir, paper_numbers_csv=args.paper_numbers)
    print(out)
    return 0
