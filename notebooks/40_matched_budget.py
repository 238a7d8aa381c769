# %% [markdown]
# # 40 · Matched training budget
#
# The paper trains CKD for 480 epochs (cosine) and takes its baselines' numbers at 240 epochs
# (steps at 150/180/210); on five pairs CKD also uses batch 32 against the baselines' 64. Counted
# in optimizer steps, CKD gets two to four times its baselines' budget. No published code
# compares them at equal budgets; this notebook does, both ways, beside each method's own recipe:
# - CKD at the baselines' budget (their epochs, schedule and batch size: their steps and images);
# - KD and DKD at CKD's budget (its epochs, schedule and batch size);
# - where the two recipes' batch sizes differ, also each at the other's schedule with its own
#   batch: equal epochs, but not equal steps (what a comparison by epochs alone would give).
#
# Each method keeps its own lr. The own-recipe rows are the main tables' runs (shared with them,
# never recomputed). The table below gives each row's optimizer steps and images seen; the report
# compares methods only within one budget (equal steps and images) and says so.
#
# Parameters come from the profile named in the parameters cell (`demo` by default: Run All
# runs this notebook's part of the CPU demo); a value set there, or passed with papermill's
# `-p NAME VALUE`, overrides the profile and the banner says so. `python -m ckd_lib.study
# --profile demo --list` shows every resolved value.

# %%
import pandas as pd
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
pairs: list[str] = None  # recipe pairs "teacher->student" ([]: all eleven of both tables)
methods: list[str] = None  # baselines to move onto CKD's schedule
seeds: list[int] = None  # seeds of each cell
devices: list[str] = None  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
p = study.parameters("40_matched_budget", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Matched training budget")
budget_pairs = study.table_pairs("all", p.pairs, settings.recipe_dataset)
for teacher, student in budget_pairs:
    print("pair", settings.describe_pair(teacher, student))
rows = study.matched_budget_rows(settings, budget_pairs, p.seeds, p.methods)

# %% [markdown]
# ## Training (one line per epoch and student)

# %%
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Results
# Best-epoch (selected on the test set) and last-epoch top-1, mean ± std over seeds, per pair:
# each method at its own recipe and at the other's budget, with the optimizer steps and images
# each row trained.

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
