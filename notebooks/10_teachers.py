# %% [markdown]
# # 10 · Teachers
#
# Every distillation run needs a frozen teacher. Each teacher is either loaded from a
# RepDistiller/mdistiller-style `cifar_teachers` folder (`<model>_vanilla/ckpt_epoch_240.pth`)
# or trained here with method CE and the teachers' recipe (240 epochs, steps at 150/180/210).
# Its test accuracy is measured and set beside the published one (`literature.csv`); on CIFAR-100
# a teacher more than `tolerance` points away is flagged. The result is the profile's teacher
# index, which every later notebook reads.

# %%
import pandas as pd
from IPython.display import display

from ckd_lib import study

# %% tags=["parameters"]
profile: str = "demo"  # profile name: results go to <results_dir>/<profile>
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = "cifar100"  # dataset the teachers train on (the paper: cifar100)
data_root: str = ""  # folder of the datasets ("": $CKD_DATA_ROOT, else <repository>/data)
epoch_scale: float = 1.0  # multiplies the recipe's epochs and milestones (1: published)
train_subset: int = 0  # training images, class-stratified (0: all)
test_subset: int = 0  # test images (0: all)
substitute: dict[str, str] = {}  # stand-in models, {recipe model: model trained} ({}: none)
teachers: list[str] = []  # teachers (recipe names) to prepare ([]: every teacher of the tables)
teachers_dir: str = ""  # cifar_teachers folder to load checkpoints from ("": train them all)
train_missing: bool = True  # train the teachers whose checkpoint the folder lacks
teacher_seed: int = 0  # seed of the teacher runs
tolerance: float = 1.0  # accepted gap to the published top-1, in points
devices: list[str] = []  # GPUs to spread the runs over, e.g. ["0", "1"] ([]: this process)

# %%
settings = study.Settings(profile=profile, results_dir=results_dir, dataset=dataset,
                          data_root=data_root, epoch_scale=epoch_scale,
                          train_subset=train_subset, test_subset=test_subset,
                          substitute=substitute, devices=devices)
settings.banner("Teachers")
names = teachers or study.all_teachers(settings.recipe_dataset)
print("teachers:", ", ".join(f"{n} (as {settings.model(n)})" if settings.model(n) != n else n
                             for n in names))

# %%
entries = study.prepare_teachers(settings, names, seed=teacher_seed,
                                 teachers_dir=str(study.resolve(teachers_dir)) if teachers_dir
                                 else "", train_missing=train_missing, tolerance=tolerance)

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
          f"{tolerance} points; distillation results with them are not comparable")
