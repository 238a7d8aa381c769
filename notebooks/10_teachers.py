# %% [markdown]
# # 10 · Teachers
#
# Every distillation run needs a frozen teacher. Each teacher is either loaded from a
# RepDistiller/mdistiller-style `cifar_teachers` folder (`<model>_vanilla/ckpt_epoch_240.pth`)
# or trained here with method CE and the teachers' recipe (240 epochs, steps at 150/180/210).
# Its test accuracy is measured and set beside the published one (`literature.csv`); on CIFAR-100
# a teacher more than `tolerance` points away is flagged. The result is the profile's teacher
# index, which every later notebook reads.
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
dataset: str = None  # dataset the teachers train on (the paper: cifar100)
data_root: str = None  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
epoch_scale: float = None  # multiplies the recipe's epochs and milestones (1: published)
train_subset: int = None  # training images, class-stratified (0: all)
test_subset: int = None  # test images (0: all)
data_seed: int = None  # seed drawing the subsets (the same images for every run seed)
substitute: dict[str, str] = None  # stand-in models, {recipe model: model trained} ({}: none)
teachers: list[str] = None  # teachers (recipe names) to prepare ([]: every teacher of the tables)
teachers_dir: str = None  # cifar_teachers folder to load checkpoints from ("": train them all)
train_missing: bool = None  # train the teachers whose checkpoint the folder lacks
teacher_seed: int = None  # seed of the teacher runs
tolerance: float = None  # accepted gap to the published top-1, in points
devices: list[str] = None  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
p = study.parameters("10_teachers", globals())  # every parameter left at None: the profile's
settings = study.Settings.from_parameters(p)
settings.banner("Teachers")
names = p.teachers or study.all_teachers(settings.recipe_dataset)
print("teachers:", ", ".join(f"{n} (as {settings.model(n)})" if settings.model(n) != n else n
                             for n in names))

# %%
entries = study.prepare_teachers(settings, names, seed=p.teacher_seed,
                                 teachers_dir=str(study.resolve(p.teachers_dir)) if p.teachers_dir
                                 else "", train_missing=p.train_missing, tolerance=p.tolerance)

# %% [markdown]
# ## Measured against published

# %%
table = pd.DataFrame(entries)[["recipe", "model", "source", "measured_top1", "test_size",
                               "literature_top1", "verdict", "literature_source"]]
display(table)
print("teacher index:", settings.teacher_index_path)
flagged = [e["model"] for e in entries if e["verdict"].startswith("DIFFERS")]
if flagged:
    print(f"WARNING: teachers {flagged} differ from the published accuracy by more than "
          f"{p.tolerance} points; distillation results with them are not comparable")
