# %% [markdown]
# # 50 · Training cost of CE, KD, DKD and CKD
#
# CKD adds no parameters and one B×B similarity matrix per batch. This notebook measures what
# that costs: the time per training iteration (teacher forward, student forward and backward,
# update) and the memory of each method on one pair, and the cost of the CKD loss alone against
# the batch size (with KD's loss for reference). All methods run the engine's objectives eagerly
# in float32 on random CIFAR-shaped inputs, so only the methods differ. Times depend on the
# device: the table says which one measured them.

# %%
import pandas as pd
from IPython.display import display

from ckd_lib import analysis, study
from ckd_lib.analysis.plots import plot_efficiency

# %% tags=["parameters"]
profile: str = "demo"  # profile name: results go to <results_dir>/<profile>
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
substitute: dict[str, str] = {}  # stand-in models, {recipe model: model trained} ({}: none)
pair: str = "resnet32x4->resnet8x4"  # the recipe pair "teacher->student" to time
methods: list[str] = ["CE", "KD", "DKD", "CKD"]  # methods to time
batch_size: int = 64  # batch size of the timed iterations
num_classes: int = 100  # classes of the logits (CIFAR-100: 100)
steps: int = 50  # timed iterations per method (median reported)
warmup: int = 10  # untimed iterations first
loss_batch_sizes: list[int] = [32, 64, 128, 256, 512, 1024]  # batch sizes for the loss alone
loss_repeats: int = 50  # timed repetitions of the loss per batch size
device: str = "auto"  # device to measure on ("auto": CUDA if available, else CPU)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, substitute=substitute)
settings.banner("Training cost")
teacher, student = study.split_pair(pair)
print("pair", settings.describe_pair(teacher, student))

# %% [markdown]
# ## Time per iteration and memory

# %%
rows = []
for method in methods:
    rows.append(analysis.time_training_step(
        method, settings.model(teacher), settings.model(student), batch_size=batch_size,
        num_classes=num_classes, device=device, steps=steps, warmup=warmup))
    print(f"{method}: {rows[-1]['ms_per_iter']:.1f} ms per iteration")
table = pd.DataFrame(rows)
reference = table.set_index("method")["ms_per_iter"].get("KD")
if reference:
    table["time vs KD"] = (table["ms_per_iter"] / reference).round(3)
display(table)

# %% [markdown]
# ## The CKD loss alone against the batch size

# %%
loss_rows = analysis.time_loss(loss_batch_sizes, num_classes=num_classes, device=device,
                               repeats=loss_repeats)
display(pd.DataFrame(loss_rows).pivot(index="batch_size", columns="loss", values="ms"))

# %%
fig = plot_efficiency(rows, loss_rows, title=f"{settings.describe_pair(teacher, student)}, "
                                             f"batch {batch_size}, {rows[0]['device']}")
settings.save_artifact("efficiency", data={
    "pair": pair, "run_as": settings.describe_pair(teacher, student), "rows": rows,
    "loss_rows": loss_rows}, figure=fig)
