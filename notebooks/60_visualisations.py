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

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from ckd_lib import analysis, study
from ckd_lib.analysis.plots import plot_correlation, plot_curves, plot_tsne
from ckd_lib.data import load_dataset
from ckd_lib.models import load_teacher

# %% tags=["parameters"]
profile: str = "demo"  # profile name: runs go to <results_dir>/<profile>/runs
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = "cifar100"  # dataset the runs train on (the paper: cifar100)
data_root: str = ""  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
epoch_scale: float = 1.0  # multiplies every recipe's epochs, milestones, warm-up (1: published)
train_subset: int = 0  # training images per run, class-stratified (0: all)
test_subset: int = 0  # test images (0: all)
substitute: dict[str, str] = {}  # stand-in models, {recipe model: model trained} ({}: none)
pair: str = "resnet32x4->resnet8x4"  # the recipe pair "teacher->student" to show
methods: list[str] = ["CE", "KD", "DKD", "CKD"]  # students to show
seed: int = 0  # which seed's students
tsne_points: int = 2000  # test images in the t-SNE, class-stratified (0: all)
tsne_perplexity: float = 30.0  # t-SNE perplexity
max_diff: float = 3.0  # top of the heatmaps' colour scale (mdistiller: 3.0)
devices: list[str] = []  # GPUs to spread missing runs over ([]: this process)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, dataset=dataset,
                          data_root=data_root, epoch_scale=epoch_scale,
                          train_subset=train_subset, test_subset=test_subset,
                          substitute=substitute, devices=devices)
settings.banner("Visualisations")
teacher, student = study.split_pair(pair)
title = settings.describe_pair(teacher, student)
print("pair", title)
rows = study.main_rows(settings, [(teacher, student)], methods, [seed])
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Outputs on the test set

# %%
test = load_dataset(dataset, "test", data_root=data_root or None, subset=test_subset or None,
                    seed=seed)
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
idx = analysis.stratified_sample(labels, tsne_points, seed=seed)
embeddings = {name: analysis.tsne_embedding(outputs[name]["features"][idx], seed=seed,
                                            perplexity=tsne_perplexity)
              for name in [row.name for row in rows]}
fig = plot_tsne(embeddings, labels[idx], title=f"t-SNE of student features, {title}")
settings.save_artifact("tsne", data={
    "pair": pair, "run_as": title, "seed": seed, "labels": labels[idx].tolist(),
    "runs": {row.name: rec["run_id"] for row, rec in zip(rows, records, strict=True)},
    "points": {name: np.round(e, 4).tolist() for name, e in embeddings.items()}}, figure=fig)

# %% [markdown]
# ## Teacher–student class-correlation difference

# %%
differences = {name: analysis.correlation_difference(outputs[name]["logits"],
                                                     outputs["teacher"]["logits"], labels,
                                                     test.num_classes)
               for name in [row.name for row in rows]}
display(pd.DataFrame([{"student": n, "mean |diff|": d["mean"], "max |diff|": d["max"]}
                      for n, d in differences.items()]))
fig = plot_correlation(differences, max_diff=max_diff,
                       title=f"|class-mean logits student − teacher|, {title}")
settings.save_artifact("correlation", data={
    "pair": pair, "run_as": title, "seed": seed, "max_diff": max_diff,
    "kind": "mean_logits", "students": {n: {"mean": d["mean"], "max": d["max"],
                                            "matrix": np.round(d["matrix"], 4).tolist()}
                                        for n, d in differences.items()}}, figure=fig)

# %% [markdown]
# ## Training curves

# %%
fig = plot_curves(records, names=[row.name for row in rows], title=f"training curves, {title}")
settings.save_artifact("curves", figure=fig)
