"""The study layer: what the notebooks call, and the runner that executes them.

Notebooks use :class:`Settings` (a profile's dataset, schedule scale, subsets and model
stand-ins, applied to the published recipes), the designs of the tables
(:mod:`ckd_lib.study.designs`), the teachers (:mod:`ckd_lib.study.teachers`) and
:func:`summary`. ``python -m ckd_lib.study`` (:mod:`ckd_lib.study.runner`) checks a profile and
executes its notebooks with papermill; see docs/CONTRACTS.md for the results layout.

What the notebooks leave for the report, besides the run records (``results/<profile>/runs``):

- run labels: ``teacher``, ``same_arch``, ``cross_arch`` (main tables), ``ablation <row>``
  (e.g. ``ablation tau=0.5``, ``ablation batch=128 chunk=16``, ``ablation student_negatives``),
  ``matched_budget``; a run shared by two notebooks keeps its main-table label;
- ``artifacts/teachers.json`` (the teacher index: checkpoint, measured and published top-1,
  verdict), ``environment.json/.png``, ``ablations.json`` and ``matched_budget.json`` (rows and
  the run ids of each row), ``efficiency.json/.png`` (ms per iteration, memory, loss cost against
  the batch size), ``tsne.json/.png`` (points per method), ``correlation.json/.png`` (the
  class-correlation difference matrices), ``curves.png``. Every JSON carries ``profile`` and
  ``dataset``.
"""

import warnings

from ckd_lib.methods import main_methods
from ckd_lib.study.designs import (
    VARIANTS,
    Row,
    ablation_rows,
    main_rows,
    matched_budget_rows,
)
from ckd_lib.study.notebook import NotebookParameters, parameters
from ckd_lib.study.params import ParameterError, notebook_parameters
from ckd_lib.study.paths import StudyPaths, project_root, resolve
from ckd_lib.study.plan import (
    Settings,
    StudyError,
    family,
    group_configs,
    pair_name,
    print_banner,
    run_groups,
    scale_schedule,
    split_pair,
    summary,
    table_of,
    table_pairs,
)
from ckd_lib.study.teachers import all_teachers, literature_teacher, prepare_teachers

# tqdm.auto (the engine's progress bar) warns in every kernel without ipywidgets; the study
# prints one line per epoch instead of a bar, so the warning is noise in the executed notebooks.
warnings.filterwarnings("ignore", message="IProgress not found")

__all__ = [
    "NotebookParameters",
    "VARIANTS",
    "ParameterError",
    "Row",
    "Settings",
    "StudyError",
    "StudyPaths",
    "ablation_rows",
    "all_teachers",
    "family",
    "group_configs",
    "literature_teacher",
    "main_methods",
    "main_rows",
    "matched_budget_rows",
    "notebook_parameters",
    "pair_name",
    "parameters",
    "print_banner",
    "prepare_teachers",
    "project_root",
    "resolve",
    "run_groups",
    "scale_schedule",
    "split_pair",
    "summary",
    "table_of",
    "table_pairs",
]
