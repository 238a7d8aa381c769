# %% [markdown]
# # 00 · Environment and data check
#
# What this study runs on: code version, software, devices; the dataset the profile trains on
# (sizes, classes, normalisation, fingerprints, a few images); the recipe and literature tables;
# and the teacher checkpoints, if a `cifar_teachers` folder is given. Nothing is trained here.
#
# Parameters come from the profile named in the parameters cell (`demo` by default: Run All
# runs this notebook's part of the CPU demo); a value set there, or passed with papermill's
# `-p NAME VALUE`, overrides the profile and the banner says so. `python -m ckd_lib.study
# --profile demo --list` shows every resolved value.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ckd_lib import recipes, results, study
from ckd_lib.data import load_dataset
from ckd_lib.models import list_models
from ckd_lib.study.teachers import CHECKPOINT_LAYOUT, all_teachers

# %% tags=["parameters"]
profile: str = "demo"  # profile (notebooks/profiles/NAME.yaml) giving each parameter left None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = None  # dataset the profile trains on (the paper: cifar100)
data_root: str = None  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
train_subset: int = None  # training images the runs use, class-stratified (0: all)
test_subset: int = None  # test images the runs use (0: all)
data_seed: int = None  # seed drawing the subsets (the same images for every run seed)
substitute: dict[str, str] = None  # stand-in models, {recipe model: model trained} ({}: none)
teachers_dir: str = None  # mdistiller-style cifar_teachers folder to check ("": none)

# %%
p = study.parameters("00_environment", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Environment and data")

# %% [markdown]
# ## Code, software and devices

# %%
env = {**results.git_state(), **results.environment()}
env["cuda_available"] = torch.cuda.is_available()
env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
display(pd.Series(env, name="value").to_frame())

# %% [markdown]
# ## The data

# %%
splits = {}
for split, subset in (("train", p.train_subset), ("test", p.test_subset)):
    splits[split] = load_dataset(p.dataset, split, data_root=p.data_root or None,
                                 subset=subset or None, seed=p.data_seed)
data_table = pd.DataFrame([{
    "split": split, "images": len(d.labels), "classes": d.num_classes,
    "per class (min-max)": f"{int(d.labels.bincount().min())}-{int(d.labels.bincount().max())}",
    "shape": tuple(d.images.shape[1:]), "mean": tuple(round(m, 4) for m in d.mean),
    "std": tuple(round(s, 4) for s in d.std), "fingerprint": d.fingerprint()[:16],
} for split, d in splits.items()])
display(data_table)

# %%
train = splits["train"]
fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
for i, ax in enumerate(axes.flat):  # up to 16 images (a rehearsal's set may hold fewer)
    ax.axis("off")
    if i < len(train.labels):
        ax.imshow(train.images[i].permute(1, 2, 0).numpy())
        name = train.classes[int(train.labels[i])] if getattr(train, "classes", None) else ""
        ax.set_title(f"{int(train.labels[i])} {name}"[:14], fontsize=8)
fig.suptitle(f"{train.name}: first training images")
plt.show()

# %% [markdown]
# ## Recipes, models and teachers

# %%
pairs = [{"teacher": t, "student": s, "table": study.table_of(t, s),
          "run as": settings.describe_pair(t, s)}
         for t, s in recipes.pairs(settings.recipe_dataset, "CKD")]
display(pd.DataFrame(pairs))
missing = sorted({settings.model(m) for p in recipes.pairs(settings.recipe_dataset, "CKD")
                  for m in p} - set(list_models("cifar")))
print("models of the tables missing from the zoo:", missing or "none")

# %%
rows = []
for teacher in all_teachers(settings.recipe_dataset):
    model = settings.model(teacher)
    published, source = study.literature_teacher(teacher, settings.recipe_dataset)
    row = {"teacher": teacher, "model": model, "published top-1": published, "source": source}
    if p.teachers_dir:
        path = study.resolve(p.teachers_dir) / CHECKPOINT_LAYOUT.format(model=model)
        row["checkpoint"] = str(path) if path.is_file() else "MISSING"
    rows.append(row)
display(pd.DataFrame(rows))
if not p.teachers_dir:
    print("no cifar_teachers folder given: 10_teachers trains the teachers")

# %%
settings.save_artifact("environment", data={
    "environment": env, "data": data_table.astype(str).to_dict("records")}, figure=fig)
