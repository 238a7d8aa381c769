"""The generated report of the study: tables in the paper's layout, figures and provenance, read
from run records only (``results/<profile>/runs``) and the notebooks' artifacts.

Entry points:
- ``build_report(profile="demo", results_dir="results", *, paper_numbers_csv=None,
  kernel_name="python3", timeout=1800) -> Path``: executes ``notebooks/90_report.py``, then
  ``publish``.
- ``publish(profile, results_dir, executed=None) -> Path``: ``results/<profile>/report.html``
  and ``summary.csv``, the executed notebooks as HTML, and the index ``results/report.html``.
- ``build_html(executed_notebook, out_html, *, title=None, show_input=False) -> Path``:
  nbconvert without anything loaded from the network.
- ``prepare(profile, results_dir, paper_numbers_csv) -> Report``: what the notebook displays.
"""

from ckd_lib.report.build import Report, build_html, build_report, prepare, publish
from ckd_lib.report.collect import Study, load_study
from ckd_lib.report.literature import NOT_SUPPLIED, PaperNumbers, load_literature
from ckd_lib.report.tables import Cell, ReportTables, Stats, Table, build_tables, summary_frame

__all__ = ["NOT_SUPPLIED", "Cell", "PaperNumbers", "Report", "ReportTables", "Stats", "Study",
           "Table", "build_html", "build_report", "build_tables", "load_literature", "load_study",
           "prepare", "publish", "summary_frame"]
