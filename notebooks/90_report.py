# %% [markdown]
# # CKD: Contrastive Knowledge Distillation — study report
#
# Generated from the run records of one profile (`results/<profile>/runs`) and the artifacts
# the other notebooks wrote. `python -m ckd_lib.report --profile <p>` (or `make reproduce`)
# executes this notebook and turns it into `results/report.html`.

# %%
from html import escape

from IPython.display import HTML, Image, display

from ckd_lib.report import figures, prepare
from ckd_lib.report import html as fragments
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
if not study.frame.empty or coco_runs.empty:
    display(HTML(fragments.banner_html(study)))
display(HTML(detection_banner_html(coco_runs)))
if not study.frame.empty or coco_runs.empty:
    display(HTML(fragments.overview_html(study, tables)))
if study.paper.error:
    display(HTML(f'<div class="ckd-note ckd-neg">{escape(study.paper.error)}</div>'))
summary_path = report.write_summary()


def show(fig):
    """Display a matplotlib figure as a PNG output and free it."""
    import matplotlib.pyplot as plt

    if fig is not None:
        display(fig)
        plt.close(fig)


# %% [markdown]
# ## Main tables (the paper's layout)

# %%
for table in tables.main:
    display(HTML(fragments.pair_table_html(table, report.sources, report.commands.get(table.key))))
if not tables.main:
    display(HTML('<div class="ckd-note">No distillation runs in these records.</div>'))

# %% [markdown]
# ## Figures

# %%
fig = figures.gain_over_kd(tables)
show(fig)
if fig is None:
    display(HTML('<div class="ckd-note">No pair has both KD and another method.</div>'))

# %%
show(figures.accuracy_curves(study, tables))

# %%
display(HTML(fragments.teachers_html(tables.teachers, report.sources,
                                     report.commands.get("teachers"))))

# %%
display(HTML(fragments.ablations_html(tables.ablations, report.sources,
                                      report.commands.get("ablations"))))

# %%
display(HTML(fragments.pair_table_html(tables.budget, report.sources,
                                       report.commands.get("budget"), budget_column=True,
                                       level=2)))

# %% [markdown]
# ## Efficiency: accuracy against time per iteration

# %%
fig = figures.accuracy_vs_time(study)
show(fig)
pngs = fragments.artifact_files(study, "efficiency", ".png")
for path in pngs:
    display(HTML(fragments.artifact_html(study, path)), Image(filename=str(path)))
for path in fragments.artifact_files(study, "efficiency", ".json"):
    if not path.with_suffix(".png").is_file():
        display(HTML(fragments.artifact_html(study, path)))
if not pngs:
    display(HTML(fragments.missing_artifact_note(study, "efficiency")))

# %% [markdown]
# ## Teacher–student class-correlation differences

# %%
pngs = fragments.artifact_files(study, "correlation", ".png")
for path in pngs:
    display(HTML(fragments.artifact_html(study, path)), Image(filename=str(path)))
if not pngs:
    display(HTML(fragments.missing_artifact_note(study, "correlation heatmap")))

# %% [markdown]
# ## t-SNE of student features

# %%
pngs = fragments.artifact_files(study, "tsne", ".png")
for path in pngs:
    display(HTML(fragments.artifact_html(study, path)), Image(filename=str(path)))
if not pngs:
    display(HTML(fragments.missing_artifact_note(study, "t-SNE")))

# %%
others = fragments.artifact_files(study, None, ".png")
if others:
    display(HTML('<h3 class="ckd-h">Other figures the notebooks wrote</h3>'))
for path in others:
    display(HTML(fragments.artifact_html(study, path)), Image(filename=str(path)))

# %%
display(HTML(detection_html(detection_table(coco_runs), profile=profile, frame=coco_runs)))

# %% [markdown]
# ## Published numbers for these pairs

# %%
display(HTML(fragments.literature_html(study, tables.main, report.sources)))

# %% [markdown]
# ## Provenance

# %%
display(HTML(fragments.provenance_html(report.provenance, report.commands, tables.all())))
for path in fragments.artifact_files(study, "environment", ".png"):
    display(HTML("<h4>Environment and data check</h4>" + fragments.artifact_html(study, path)),
            Image(filename=str(path)))
for path in fragments.artifact_files(study, "environment", ".json"):
    if not path.with_suffix(".png").is_file():
        display(HTML("<h4>Environment and data check</h4>" + fragments.artifact_html(study, path)))
display(HTML(fragments.run_index_html(study)))
