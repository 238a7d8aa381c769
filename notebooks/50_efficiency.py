# %% [markdown]
# # 50 · Training cost of CE, KD, DKD and CKD
#
# CKD adds no parameters and one B×B similarity matrix per batch. This notebook measures what
# that costs: the time per training iteration (teacher forward, student forward and backward,
# update) and the memory of each method on one pair, and the cost of the CKD loss alone against
# the batch size (with KD's loss for reference). All methods run the engine's objectives eagerly
# in float32 on random CIFAR-shaped inputs, so only the methods differ. The methods are timed
# interleaved: `rounds` rounds, each timing `steps` iterations of every method in a rotated order,
# so a busy moment of the machine cannot make one method look slow. A timing whose order cannot be
# true (the student alone slower than a method that also runs the teacher) is flagged as noisy,
# and the report prints no ratio from it. Times depend on the device: the table says which one.
#
# Parameters come from the profile named in the parameters cell (`demo` by default: Run All
# runs this notebook's part of the CPU demo); a value set there, or passed with papermill's
# `-p NAME VALUE`, overrides the profile and the banner says so. `python -m ckd_lib.study
# --profile demo --list` shows every resolved value.

# %%
import pandas as pd
from IPython.display import display

from ckd_lib import analysis, study
from ckd_lib.report.figures import efficiency_figure

# %% tags=["parameters"]
profile: str = "demo"  # profile (notebooks/profiles/NAME.yaml) giving each parameter left None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = None  # the dataset whose runs these costs are for (the report names it)
substitute: dict[str, str] = None  # stand-in models, {recipe model: model trained} ({}: none)
pair: str = None  # the recipe pair "teacher->student" to time
methods: list[str] = None  # methods to time
batch_size: int = None  # batch size of the timed iterations
num_classes: int = None  # classes of the logits (CIFAR-100: 100)
steps: int = None  # timed iterations per method in each round (median reported)
rounds: int = None  # rounds, each timing every method in turn (interleaved)
warmup: int = None  # untimed iterations first
loss_batch_sizes: list[int] = None  # batch sizes for the loss alone
loss_repeats: int = None  # timed repetitions of the loss per batch size
device: str = None  # device to measure on ("auto": CUDA if available, else CPU)

# %%
p = study.parameters("50_efficiency", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Training cost")
teacher, student = study.split_pair(p.pair)
methods = p.methods or study.main_methods()
print("pair", settings.describe_pair(teacher, student))

# %% [markdown]
# ## Time per iteration and memory

# %%
rows = analysis.time_methods(
    methods, settings.model(teacher), settings.model(student), batch_size=p.batch_size,
    num_classes=p.num_classes, device=p.device, steps=p.steps, warmup=p.warmup, rounds=p.rounds)
for row in rows:
    print(f"{row['method']}: {row['ms_per_iter']:.1f} ms per iteration (rounds "
          f"{row['ms_per_iter_min']:.1f}-{row['ms_per_iter_max']:.1f})")
if rows[0]["noisy"]:
    print("NOISY MEASUREMENT:", rows[0]["noisy"])
table = pd.DataFrame(rows).drop(columns=["round_ms"])
reference = table.set_index("method")["ms_per_iter"].get("KD")
if reference and not rows[0]["noisy"]:
    table["time vs KD"] = (table["ms_per_iter"] / reference).round(3)
display(table)

# %% [markdown]
# ## The CKD loss alone against the batch size

# %%
loss_rows = analysis.time_loss(p.loss_batch_sizes, num_classes=p.num_classes, device=p.device,
                               repeats=p.loss_repeats)
display(pd.DataFrame(loss_rows).pivot(index="batch_size", columns="loss", values="ms"))

# %%
efficiency = {"pair": p.pair, "run_as": settings.describe_pair(teacher, student), "rows": rows,
              "loss_rows": loss_rows}
fig = efficiency_figure(efficiency)  # the report's figure, from the same data
settings.save_artifact("efficiency", data=efficiency, figure=fig)
