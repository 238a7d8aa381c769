# %% [markdown]
# # 30 · CKD ablations
#
# One pair, CKD's recipe, one thing changed per row:
# - the temperature τ of the similarity logits, and the CKD weight `cl_weight`;
# - the batch size, i.e. the number of negatives per anchor (B − 1), and negatives drawn in
#   fixed-size chunks, which decouples their number from the batch size;
# - the reading of the negatives: teacher–student pairs (t_i, s_j), as the authors' code
#   computes, against student–student pairs (s_i, s_j), as a summary of the text reads;
# - the symmetric (CLIP-style) loss, the positive term alone (no inter-sample contrast), a
#   learnable τ, KD + CKD, and CKD + ReviewKD (with its 20-epoch warm-up).
#
# The "baseline" row is the recipe's CKD run (the main table's run, shared with it).
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
pair: str = None  # the recipe pair "teacher->student" of the ablations
seeds: list[int] = None  # seeds of each row
temperatures: list[float] = None  # values of tau
cl_weights: list[float] = None  # values of the CKD weight
batch_sizes: list[int] = None  # batch sizes (negatives per anchor: batch - 1)
chunk_sizes: list[int] = None  # chunk sizes of chunked negatives, at each larger batch
variants: list[str] = None  # named variants (see ckd_lib.study.VARIANTS)
devices: list[str] = None  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
p = study.parameters("30_ablations", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("CKD ablations")
teacher, student = study.split_pair(p.pair)
print("pair", settings.describe_pair(teacher, student))
rows = study.ablation_rows(settings, (teacher, student), p.seeds, p.temperatures, p.cl_weights,
                           p.batch_sizes, p.chunk_sizes, p.variants)
print(f"{len(rows)} runs:", ", ".join(dict.fromkeys(row.name for row in rows)))

# %% [markdown]
# ## Training (one line per epoch and student)

# %%
records = settings.train([row.config for row in rows])

# %% [markdown]
# ## Results
# Mean ± std over seeds; Δ is the change of the mean best-epoch top-1 against the baseline.

# %%
table = study.summary(records, rows=[row.name for row in rows])
best = pd.DataFrame([{"row": row.name, "best": record["best"]["top1"]}
                     for row, record in zip(rows, records, strict=True)
                     if record["status"] == "complete"])
means = best.groupby("row")["best"].mean()
table["Δ best vs baseline"] = (table["row"].map(means) - means["baseline"]).round(2)
display(table)

# %%
runs = pd.DataFrame([{"row": row.name, "seed": row.seed, "run_id": record["run_id"]}
                     for row, record in zip(rows, records, strict=True)])
settings.save_artifact("ablations", data={
    "pair": p.pair, "run_as": settings.describe_pair(teacher, student),
    "rows": table.to_dict("records"), "runs": runs.to_dict("records")})
