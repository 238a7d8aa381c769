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
#
# Parameters come from the profile in the parameters cell: `imagenet_demo` by default (a
# generated four-class JPEG folder, untrained teachers, CPU, a few minutes: it shows the
# pipeline, not the paper's numbers); `imagenet` is the paper's setting on 8 GPUs.

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from ckd_lib import study
from ckd_lib.report.literature import load_literature
from ckd_lib.study.torchrun import (
    folder_configs,
    folder_data_root,
    folder_deviations,
    folder_pairs,
    launch,
    results_table,
)

# %% tags=["parameters"]
profile: str = "imagenet_demo"  # profile (notebooks/profiles/NAME.yaml) setting what is None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
dataset: str = None  # "imagenet" or "places365"
data_root: str = None  # folder holding imagenet/{train,val} ("": $CKD_DATA_ROOT, else data/)
pairs: list[str] = None  # pairs "teacher->student" ([]: every pair with a CKD recipe)
methods: list[str] = None  # methods of each pair (those with a recipe run)
seeds: list[int] = None  # seeds of each cell
nproc_per_node: int = None  # GPUs of this node used by each torchrun job
epoch_scale: float = None  # multiplies the recipes' epochs and milestones (1: published)
train_subset: int = None  # training images per run (0: all)
test_subset: int = None  # validation images (0: all)
teacher_checkpoint: str = None  # "": the recipe's teacher (torchvision's for ImageNet); or a path
negatives_scope: str = None  # CKD negatives under DDP: "local" (authors) or "global"
batch_size: int = None  # global batch over all GPUs (0: the recipe's, 512 for ImageNet)
num_workers: int = None  # DataLoader workers per GPU (0: the recipe's default, 8)
device: str = None  # "auto" (CUDA when present), "cpu" for tests

# %%
p = study.parameters("70_imagenet", globals())  # every parameter left at None: the profile's
paths = study.StudyPaths.of(p.profile, p.results_dir)
data_root = folder_data_root(p.data_root, p.dataset, paths)
study.print_banner(f"{p.dataset} table", p.profile, folder_deviations(p), p.overrides)
table_pairs = folder_pairs(p.dataset, p.pairs)
configs = folder_configs(
    p.dataset, table_pairs, p.methods, p.seeds, out_dir=str(paths.runs), data_root=data_root,
    epoch_scale=p.epoch_scale, train_subset=p.train_subset, test_subset=p.test_subset,
    teacher_checkpoint=p.teacher_checkpoint, negatives_scope=p.negatives_scope,
    batch_size=p.batch_size, device=p.device, num_workers=p.num_workers)
print(f"{len(configs)} run(s) on {p.dataset}, {p.nproc_per_node} process(es) per torchrun job")

# %% [markdown]
# ## Training (torchrun jobs; one line per epoch)

# %%
records = launch(configs, p.nproc_per_node, Path(paths.root) / "configs")

# %% [markdown]
# ## Results, with the published numbers of the same cells

# %%
table = results_table(records)
display(table)
published = pd.DataFrame([row for row in load_literature() if row["dataset"] == p.dataset])
if not published.empty:
    display(published[["teacher", "student", "method", "top1", "source"]])
