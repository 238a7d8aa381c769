# %% [markdown]
# # 40 · Matched training budget
#
# The paper trains CKD for 480 epochs (cosine) and takes its baselines' numbers at 240 epochs
# (steps at 150/180/210): CKD gets twice the budget. No published code compares them at equal
# budgets; this notebook does, both ways, beside each method's own schedule:
# - CKD on the baselines' 240-epoch step schedule;
# - KD and DKD on CKD's 480-epoch cosine schedule.
#
# Each method keeps its own lr and batch size; only epochs, schedule and milestones move. The
# own-schedule rows are the main tables' runs (shared with them, never recomputed).

# %%
import pandas as pd
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
pairs: list[str] = []  # recipe pairs "teacher->student" ([]: all eleven of both tables)
methods: list[str] = ["KD", "DKD"]  # baselines to move onto CKD's schedule
seeds: list[int] = [0, 1, 2, 3, 4]  # seeds of each cell
devices: list[str] = []  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, dataset=dataset,
                          data_root=data_root, epoch_scale=epoch_scale,
                          train_subset=train_subset, test_subset=test_subset,
                          substitute=substitute, devices=devices)
settings.banner("Matched training budget")
budget_pairs = study.table_pairs("all", pairs, settings.recipe_dataset)
for teacher, student in budget_pairs:
    print("pair", settings.describe_pair(teacher, student))
rows = study.matched_budget_rows(settings, budget_pairs, seeds, methods)

# %% [markdown]
# ## Training (one line per epoch and student)

# %%
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Results
# Best-epoch and last-epoch top-1, mean ± std over seeds, per pair: each method on its own
# schedule and on the other's.

# %%
names = [f"{row.pair} | {row.name}" for row in rows]
table = study.summary(records, rows=names)
split = table["row"].str.split(" | ", n=1, expand=True, regex=False)
table.insert(0, "pair", split[0])
table["row"] = split[1]
display(table)
runs = pd.DataFrame([{"pair": row.pair, "row": row.name, "seed": row.seed,
                      "run_id": record["run_id"]} for row, record in zip(rows, records,
                                                                          strict=True)])
settings.save_artifact("matched_budget", data={"rows": table.to_dict("records"),
                                               "runs": runs.to_dict("records")})
