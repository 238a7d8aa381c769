# %% [markdown]
# # 20 · Same-architecture pairs
#
# The paper's first table (CIFAR-100; the banner says which data runs here): six teacher →
# student pairs of one architecture family, each distilled with KD, DKD and CKD, beside the
# student trained alone (CE). Every method runs its
# own published recipe: CKD 480 epochs with a cosine schedule, the baselines 240 epochs with
# steps (`40_matched_budget` compares them at equal optimizer steps). Pairs and recipes come from
# `ckd_lib/resources/recipes.csv`. Students that share a teacher and a schedule train together,
# on one teacher forward pass per batch. Finished runs are never recomputed.
#
# Parameters come from the profile named in the parameters cell (`demo` by default: Run All
# runs this notebook's part of the CPU demo); a value set there, or passed with papermill's
# `-p NAME VALUE`, overrides the profile and the banner says so. `python -m ckd_lib.study
# --profile demo --list` shows every resolved value.

# %%
from IPython.display import display

from ckd_lib import study

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
pairs: list[str] = None  # pairs "teacher->student" of this table to run ([]: all of them)
methods: list[str] = None  # methods of each pair
seeds: list[int] = None  # seeds of each cell (data order and initial weights)
devices: list[str] = None  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
p = study.parameters("20_same_arch", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Same-architecture table")
table_pairs = study.table_pairs("same_arch", p.pairs, settings.recipe_dataset)
for teacher, student in table_pairs:
    print("pair", settings.describe_pair(teacher, student))

# %% [markdown]
# ## Training (one line per epoch and student)

# %%
rows = study.main_rows(settings, table_pairs, p.methods, p.seeds)
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Results
# Mean ± sample std over seeds of the best-epoch and last-epoch test top-1. The report sets them
# beside the published numbers, with the differences to the teacher, the student and KD.

# %%
display(study.summary(records))
