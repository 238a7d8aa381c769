# %% [markdown]
# # CKD: Contrastive Knowledge Distillation — study report
#
# Generated from the run records of one profile (`results/<profile>/runs`, and `detection` for
# COCO) and the artifacts the other notebooks wrote. It opens with what a reproduction is for:
# a summary, then each of the paper's claims with its verdict under the rule printed beside it.
# `python -m ckd_lib.report --profile <p>` (or `make reproduce`) executes this notebook and
# publishes it as `results/<profile>/report.html`; `results/report.html` lists every profile's
# report. Each section appears when the profile has
# runs for it, or runs the notebook that makes it.

# %%
from html import escape

from IPython.display import HTML, Image, display

from ckd_lib.report import claims_html, figures, prepare
from ckd_lib.report import html as fragments
from ckd_lib.report.artifacts import (
    ARTIFACT_NOTEBOOKS,
    artifact_caption,
    artifact_commands_html,
    artifact_files,
    efficiency_html,
    json_artifact_html,
    missing_artifact_note,
    read_artifact,
)
from ckd_lib.report.collect import profile_notebooks
from ckd_lib.report.detection import (
    detection_banner_html,
    detection_frame,
    detection_html,
    detection_table,
)
from ckd_lib.study.notebook import parameters

# %% tags=["parameters"]
profile: str = "demo"  # profile (notebooks/profiles/NAME.yaml) giving each parameter left None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
paper_numbers_csv: str = None  # CKD paper's own numbers ("": <results_dir>/paper_numbers.csv)

# %%
p = parameters("90_report", globals())  # every parameter left at None: the profile's
profile, results_dir = p.profile, p.results_dir
report = prepare(profile, results_dir, p.paper_numbers_csv)
study, tables = report.study, report.tables
coco_runs = detection_frame(results_dir, profile)
expected = profile_notebooks(profile, results_dir)
# classification sections: when there are classification runs, or no runs at all (the banner
# then says so)
classification = not study.frame.empty or coco_runs.empty


def show(fig):
    """Display a matplotlib figure as a PNG output and free it."""
    import matplotlib.pyplot as plt

    if fig is not None:
        display(fig)
        plt.close(fig)


def wanted(group: str) -> bool:
    """Whether the section of an artifact group belongs in this report: its data is there, or
    the profile runs the notebook that writes it."""
    return bool(artifact_files(study, group, ".json") or artifact_files(study, group, ".png")) \
        or ARTIFACT_NOTEBOOKS[group] in expected


def figure_section(group: str, what: str, draw) -> None:
    """The report's own figure drawn from an artifact's data, with where the data comes from."""
    paths = artifact_files(study, group, ".json")
    for path in paths:
        show(draw(read_artifact(path) or {}))
        display(HTML(artifact_caption(study, path)))
    for path in artifact_files(study, group, ".png") if not paths else []:
        display(HTML(artifact_caption(study, path)), Image(filename=str(path)))  # no data: as drawn
    if not paths and not artifact_files(study, group, ".png"):
        display(HTML(missing_artifact_note(study, what)))


if classification:
    display(HTML(fragments.banner_html(study)))
display(HTML(detection_banner_html(coco_runs)))
if classification:
    display(HTML(claims_html.summary_html(report.reproduction, profile)))
display(HTML(claims_html.claims_html(report.claims, study)))
display(HTML(claims_html.evidence_html(report.claims, study)))
if classification:
    display(HTML(claims_html.compute_html(report.compute)))
    display(HTML(fragments.overview_html(study, tables)))
if study.paper.error:
    display(HTML(f'<div class="ckd-note ckd-neg">{escape(study.paper.error)}</div>'))

# %%
if classification:
    display(HTML(fragments.section_html("Main tables (the paper's layout)")))
    display(HTML(claims_html.tier_rule_html()))
    for table in tables.main:
        display(HTML(fragments.pair_table_html(table, report.sources,
                                               report.commands.get(table.key))))
    if not tables.main:
        display(HTML('<div class="ckd-note">No distillation runs in these records.</div>'))

# %%
if tables.main:
    display(HTML(fragments.section_html("Figures of the main tables")))
    show(figures.gain_over_kd(tables))
    show(figures.accuracy_curves(study, tables))
    show(figures.loss_curves(study, tables))

# %%
if tables.teachers.rows:
    display(HTML(fragments.teachers_html(tables.teachers, report.sources,
                                         report.commands.get("teachers"))))
if tables.ablations.rows or "30_ablations" in expected:
    display(HTML(fragments.ablations_html(tables.ablations, report.sources,
                                          report.commands.get("ablations"))))
if tables.budget.rows or "40_matched_budget" in expected:
    display(HTML(fragments.pair_table_html(tables.budget, report.sources,
                                           report.commands.get("budget"), budget_column=True,
                                           level=2)))

# %%
accuracy_time = figures.accuracy_vs_time(study) if classification else None
if accuracy_time is not None or wanted("efficiency"):
    display(HTML(fragments.section_html("Efficiency: time per iteration and memory")))
    show(accuracy_time)
    for path in artifact_files(study, "efficiency", ".json"):  # what was measured, then figures
        display(HTML(efficiency_html(study, path)))
        show(figures.efficiency_figure(read_artifact(path) or {}))
    if not artifact_files(study, "efficiency", ".json"):
        display(HTML(missing_artifact_note(study, "efficiency")))
    display(HTML(artifact_commands_html(study, "efficiency")))

# %%
if wanted("correlation"):
    display(HTML(fragments.section_html("Teacher–student class-correlation differences")))
    figure_section("correlation", "correlation heatmap", figures.correlation_figure)
    display(HTML(artifact_commands_html(study, "correlation")))
if wanted("tsne"):
    display(HTML(fragments.section_html("t-SNE of student features")))
    figure_section("tsne", "t-SNE", figures.tsne_figure)
    display(HTML(artifact_commands_html(study, "tsne")))

# %%
others = artifact_files(study, None, ".png")
if others:
    display(HTML(fragments.section_html("Other figures the notebooks wrote", level=3)))
for path in others:
    display(HTML(artifact_caption(study, path)), Image(filename=str(path)))

# %%
if not coco_runs.empty or "80_coco" in expected:
    display(HTML(detection_html(detection_table(coco_runs), profile=profile, frame=coco_runs)))

# %%
if tables.main:
    display(HTML(fragments.section_html("Published numbers for these pairs")))
    display(HTML(fragments.literature_html(study, tables.main, report.sources)))

# %%
display(HTML(fragments.section_html("Provenance")))
display(HTML(fragments.provenance_html(report.provenance, report.commands, tables.all())))
for path in artifact_files(study, "environment", ".json"):
    display(HTML("<h4>Environment and data check</h4>" + json_artifact_html(study, path)))
    if path.with_suffix(".png").is_file():
        display(Image(filename=str(path.with_suffix(".png"))))
display(HTML(fragments.run_index_html(study)))
if study.excluded:
    display(HTML(fragments.excluded_html(study)))
