# %% [markdown]
# # 21 · CIFAR-100, cross-architecture pairs
#
# The paper's second table: five teacher → student pairs of different families (ResNet, WRN,
# VGG teachers; ShuffleNet and MobileNet students), each distilled with KD, DKD and CKD, beside
# the student trained alone (CE). Every method runs its own published recipe: CKD 480 epochs
# with a cosine schedule (lr 0.01 for these students), the baselines 240 epochs with steps.
# Pairs and recipes come from `ckd_lib/resources/recipes.csv`. Students that share a teacher and
# a schedule train together, on one teacher forward pass per batch (resnet32x4 teaches three of
# these students). Finished runs are never recomputed.

# %%
from IPython.display import display

from ckd_lib import study

# %% tags=["parameters"]
profile: str = "demo"  # profile name: runs go to <results_dir>/<profile>/runs
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = "cifar100"  # dataset the runs train on (the paper: cifar100)
data_root: str = ""  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
epoch_scale: float = 1.0  # multiplies every recipe's epochs, milestones, warm-up (1: published)
train_subset: int = 0  # training images per run, class-stratified (0: all)
test_subset: int = 0  # test images (0: all)
substitute: dict[str, str] = {}  # stand-in models, {recipe model: model trained} ({}: none)
pairs: list[str] = []  # pairs "teacher->student" of this table to run ([]: all of them)
methods: list[str] = ["CE", "KD", "DKD", "CKD"]  # methods of each pair
seeds: list[int] = [0, 1, 2, 3, 4]  # seeds of each cell (data order and initial weights)
devices: list[str] = []  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, dataset=dataset,
                          data_root=data_root, epoch_scale=epoch_scale,
                          train_subset=train_subset, test_subset=test_subset,
                          substitute=substitute, devices=devices)
settings.banner("CIFAR-100 cross-architecture table")
table_pairs = study.table_pairs("cross_arch", pairs, settings.recipe_dataset)
for teacher, student in table_pairs:
    print("pair", settings.describe_pair(teacher, student))

# %% [markdown]
# ## Training (one line per epoch and student)

# %%
rows = study.main_rows(settings, table_pairs, methods, seeds)
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Results
# Mean ± sample std over seeds of the best-epoch and last-epoch test top-1. The report sets them
# beside the published numbers, with the differences to the teacher, the student and KD.

# %%
display(study.summary(records))
