# %% [markdown]
# # 70 · ImageNet-1K and Places365
#
# The paper's large-scale table: ResNet34 → ResNet18 and ResNet50 → MobileNetV1, CKD against KD
# and DKD, with the published recipes (`ckd_lib/resources/recipes.csv`: CKD 200 epochs cosine at
# batch 512, the baselines 100 epochs stepped at 30/60/90). The ImageNet teachers are torchvision's
# pretrained weights. Each group of runs is one `torchrun --nproc_per_node=N -m ckd_lib.train`
# job (DDP over this node's GPUs); the records it writes are read back here and go into the
# report, top-1 and top-5 beside the published numbers. Set `dataset = "places365"` for the
# Places365 table (CKD recipes only; its teachers are trained by this engine with method CE).

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from ckd_lib.report.literature import load_literature
from ckd_lib.study import StudyPaths
from ckd_lib.study.plan import _display_alert
from ckd_lib.study.torchrun import folder_configs, folder_pairs, launch, results_table

# %% tags=["parameters"]
profile: str = "imagenet"  # profile name: runs go to <results_dir>/<profile>/runs
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = "imagenet"  # "imagenet" or "places365"
data_root: str = ""  # folder holding imagenet/{train,val} ("": $CKD_DATA_ROOT, else data/)
pairs: list[str] = []  # pairs "teacher->student" ([]: every pair with a CKD recipe)
methods: list[str] = ["KD", "DKD", "CKD"]  # methods of each pair (those with a recipe run)
seeds: list[int] = [0]  # seeds of each cell
nproc_per_node: int = 1  # GPUs of this node used by each torchrun job
epoch_scale: float = 1.0  # multiplies the recipes' epochs and milestones (1: published)
train_subset: int = 0  # training images per run (0: all)
test_subset: int = 0  # validation images (0: all)
teacher_checkpoint: str = ""  # "": the recipe's teacher (torchvision's for ImageNet); or a path
negatives_scope: str = "local"  # CKD negatives under DDP: "local" (authors) or "global"
batch_size: int = 0  # global batch over all GPUs (0: the recipe's, 512 for ImageNet)
num_workers: int = 0  # DataLoader workers per GPU (0: the recipe's default, 8)
device: str = "auto"  # "auto" (CUDA when present), "cpu" for tests

# %%
paths = StudyPaths.of(profile, results_dir)
paper_setting = (epoch_scale == 1.0 and not train_subset and not test_subset
                 and teacher_checkpoint in ("", "torchvision") and not batch_size)
if not paper_setting:
    _display_alert("NOT THE PAPER'S SETTING", [
        f"{dataset}: epoch_scale={epoch_scale}, train_subset={train_subset}, "
        f"test_subset={test_subset}, teacher_checkpoint={teacher_checkpoint or 'recipe'}, "
        f"batch_size={batch_size or 'recipe'}"])
table_pairs = folder_pairs(dataset, pairs)
configs = folder_configs(
    dataset, table_pairs, methods, seeds, out_dir=str(paths.runs), data_root=data_root,
    epoch_scale=epoch_scale, train_subset=train_subset, test_subset=test_subset,
    teacher_checkpoint=teacher_checkpoint, negatives_scope=negatives_scope,
    batch_size=batch_size, device=device, num_workers=num_workers)
print(f"{len(configs)} run(s) on {dataset}, {nproc_per_node} process(es) per torchrun job")

# %% [markdown]
# ## Training (torchrun jobs; one line per epoch)

# %%
records = launch(configs, nproc_per_node, Path(paths.root) / "configs")

# %% [markdown]
# ## Results, with the published numbers of the same cells

# %%
table = results_table(records)
display(table)
published = pd.DataFrame([row for row in load_literature() if row["dataset"] == dataset])
if not published.empty:
    display(published[["teacher", "student", "method", "top1", "source"]])
