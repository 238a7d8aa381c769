# %% [markdown]
# # 60 · Visualisations
#
# For one pair of the main tables (the students trained there; trained here if missing):
# - t-SNE of the students' penultimate features on the test set, by class;
# - the teacher–student class-correlation difference, as in the DKD paper's figure
#   (mdistiller's definition): per model, the C×C matrix of class-mean logits over the test set;
#   the heatmap shows |student − teacher| off the diagonal on a common scale (smaller: the
#   student keeps the teacher's inter-class relations more closely);
# - training curves: test top-1 and training loss per epoch.
#
# Parameters come from the profile named in the parameters cell (`demo` by default: Run All
# runs this notebook's part of the CPU demo); a value set there, or passed with papermill's
# `-p NAME VALUE`, overrides the profile and the banner says so. `python -m ckd_lib.study
# --profile demo --list` shows every resolved value.

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from ckd_lib import analysis, study
from ckd_lib.data import load_dataset
from ckd_lib.models import load_teacher
from ckd_lib.report.figures import correlation_figure, run_curves, tsne_figure

# %% tags=["parameters"]
profile: str = "demo"  # profile (notebooks/profiles/NAME.yaml) giving each parameter left None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = None  # dataset the runs train on (the paper: cifar100)
data_root: str = None  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
epoch_scale: float = None  # multiplies every recipe's epochs, milestones, warm-up (1: published)
train_subset: int = None  # training images per run, class-stratified (0: all)
test_subset: int = None  # test images (0: all)
data_seed: int = None  # seed drawing the subsets (the same images for every run seed)
substitute: dict[str, str] = None  # stand-in models, {recipe model: model trained} ({}: none)
pair: str = None  # the recipe pair "teacher->student" to show
methods: list[str] = None  # students to show
seed: int = None  # which seed's students
tsne_points: int = None  # test images in the t-SNE, class-stratified (0: all)
tsne_perplexity: float = None  # t-SNE perplexity
max_diff: float = None  # top of the heatmaps' colour scale (mdistiller: 3.0)
devices: list[str] = None  # GPUs to spread missing runs over ([]: this process)

# %%
p = study.parameters("60_visualisations", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Visualisations")
teacher, student = study.split_pair(p.pair)
seed = p.seed
title = settings.describe_pair(teacher, student)
print("pair", title)
rows = study.main_rows(settings, [(teacher, student)], p.methods, [seed])
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Outputs on the test set

# %%
test = load_dataset(p.dataset, "test", data_root=p.data_root or None,
                    subset=p.test_subset or None, seed=p.data_seed)
teacher_model, _ = load_teacher(settings.model(teacher),
                                settings.teacher_checkpoint(settings.model(teacher)),
                                num_classes=test.num_classes)
outputs = {"teacher": analysis.collect_outputs(teacher_model, test)}
for row, record in zip(rows, records, strict=True):
    path = settings.paths.runs / record["run_id"] / "model_last.pth"
    model, _ = load_teacher(row.config.student, path, num_classes=test.num_classes)
    outputs[row.name] = analysis.collect_outputs(model, test)
labels = outputs["teacher"]["labels"]
display(pd.DataFrame([{"model": name, "test top-1": 100 * float(np.mean(
    out["logits"].argmax(1) == labels))} for name, out in outputs.items()]))

# %% [markdown]
# ## t-SNE of the student features

# %%
idx = analysis.stratified_sample(labels, p.tsne_points, seed=seed)
embeddings = {name: analysis.tsne_embedding(outputs[name]["features"][idx], seed=seed,
                                            perplexity=p.tsne_perplexity)
              for name in [row.name for row in rows]}
tsne = {"pair": p.pair, "run_as": title, "dataset": settings.dataset, "seed": seed,
        "labels": labels[idx].tolist(),
        "runs": {row.name: rec["run_id"] for row, rec in zip(rows, records, strict=True)},
        "points": {name: np.round(e, 4).tolist() for name, e in embeddings.items()}}
fig = tsne_figure(tsne)  # the report's figure, from the same data
fig.suptitle(f"t-SNE of student features, {title}")
settings.save_artifact("tsne", data=tsne, figure=fig)

# %% [markdown]
# ## Teacher–student class-correlation difference

# %%
differences = {name: analysis.correlation_difference(outputs[name]["logits"],
                                                     outputs["teacher"]["logits"], labels,
                                                     test.num_classes)
               for name in [row.name for row in rows]}
display(pd.DataFrame([{"student": n, "mean |diff|": d["mean"], "max |diff|": d["max"]}
                      for n, d in differences.items()]))
correlation = {"pair": p.pair, "run_as": title, "seed": seed, "max_diff": p.max_diff,
               "kind": "mean_logits",
               "students": {n: {"mean": d["mean"], "max": d["max"],
                                "matrix": np.round(d["matrix"], 4).tolist()}
                            for n, d in differences.items()}}
fig = correlation_figure(correlation)
fig.suptitle(f"|class-mean logits student − teacher|, {title}")
settings.save_artifact("correlation", data=correlation, figure=fig)

# %% [markdown]
# ## Training curves

# %%
fig = run_curves(records, names=[row.name for row in rows])
fig.suptitle(f"training curves, {title}")
settings.save_artifact("curves", figure=fig)
