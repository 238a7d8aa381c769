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
pair: str = "resnet32x4->resnet8x4"  # the recipe pair "teacher->student" of the ablations
seeds: list[int] = [0, 1, 2]  # seeds of each row
temperatures: list[float] = [0.5, 1.0, 2.0, 4.0, 8.0]  # values of tau
cl_weights: list[float] = [1.0, 10.0, 50.0, 100.0, 200.0]  # values of the CKD weight
batch_sizes: list[int] = [32, 64, 128, 256]  # batch sizes (negatives per anchor: batch - 1)
chunk_sizes: list[int] = [16, 32]  # chunk sizes of chunked negatives, at each larger batch
variants: list[str] = ["student_negatives", "symmetric", "positive_only", "learnable_tau",
                       "KD+CKD", "CKD+ReviewKD"]  # named variants (see ckd_lib.study.VARIANTS)
devices: list[str] = []  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, dataset=dataset,
                          data_root=data_root, epoch_scale=epoch_scale,
                          train_subset=train_subset, test_subset=test_subset,
                          substitute=substitute, devices=devices)
settings.banner("CKD ablations")
teacher, student = study.split_pair(pair)
print("pair", settings.describe_pair(teacher, student))
rows = study.ablation_rows(settings, (teacher, student), seeds, temperatures, cl_weights,
                           batch_sizes, chunk_sizes, variants)
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
best = pd.DataFrame({"row": [row.name for row in rows],
                     "best": [record["best"]["top1"] for record in records]})
means = best.groupby("row")["best"].mean()
table["Δ best vs baseline"] = (table["row"].map(means) - means["baseline"]).round(2)
display(table)

# %%
runs = pd.DataFrame([{"row": row.name, "seed": row.seed, "run_id": record["run_id"]}
                     for row, record in zip(rows, records, strict=True)])
settings.save_artifact("ablations", data={
    "pair": pair, "run_as": settings.describe_pair(teacher, student),
    "rows": table.to_dict("records"), "runs": runs.to_dict("records")})
