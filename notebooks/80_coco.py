# %% [markdown]
# # 80 · MS-COCO detection: ReviewKD + CKD on Faster / Mask R-CNN
#
# The paper's COCO table: Faster R-CNN with FPN (Mask R-CNN with `kind = "mask_rcnn"`), pairs
# R101 → R18, R101 → R50 and R50 → MobileNetV2, CKD on the RoI head's class logits of the
# student's sampled proposals (weight 0.1, τ 1) together with ReviewKD on the FPN levels, against
# DKD and the students trained alone. Recipes: `ckd_lib/resources/recipes.csv` (360k iterations
# for ReviewKD + CKD, 180k for DKD); `matched_budget = True` runs every method 360k.
#
# Teachers: give each teacher's checkpoint in `teacher_checkpoints` — the R101 teachers are
# Detectron2's model-zoo R101-FPN 3x models converted with
# `python -m ckd_lib.detection.convert model_final.pkl r101.pth`, the R50 teacher can be
# torchvision's COCO weights (`"torchvision"`). A teacher left empty is trained here first with
# its recipe (Detectron2's 3x schedule). Runs resume when interrupted and are skipped when done.
#
# Parameters come from the profile in the parameters cell: `coco_demo` by default (generated
# shapes, small detectors, CPU, about 8 minutes: the pipeline, not the paper's numbers); `coco`
# is the paper's setting on 8 GPUs per run.

# %%
from IPython.display import HTML, display

from ckd_lib import study
from ckd_lib.report.detection import detection_frame, detection_html, detection_table
from ckd_lib.study.coco import (
    coco_data_root,
    coco_deviations,
    plan_students,
    plan_teachers,
    run_detection,
)

# %% tags=["parameters"]
profile: str = "coco_demo"  # profile (notebooks/profiles/NAME.yaml) giving each parameter left None
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
data_root: str = None  # COCO root ("": $CKD_DATA_ROOT/coco, else data/coco; "shapes": generated)
kind: str = None  # "faster_rcnn" or "mask_rcnn"
pairs: list[str] = None  # "TEACHER->STUDENT"
methods: list[str] = None  # "baseline": the student alone
seeds: list[int] = None  # seeds of each cell
teacher_checkpoints: dict = None  # "": train it here first
matched_budget: bool = None  # every method at the ReviewKD+CKD iterations of its pair
iteration_scale: float = None  # multiplies the recipes' iterations and milestones (1: published)
images_per_batch: int = None  # global batch over all GPUs (0: the recipe's)
train_min_sizes: list[int] = None  # training shorter sides ([]: 640..800, the recipe's)
test_min_size: int = None  # test shorter side (0: 800)
max_size: int = None  # longer-side cap (0: 1333)
roi_batch_per_image: int = None  # RoIs sampled per image (0: 512, the recipe's)
train_limit: int = None  # training images (0: all)
val_limit: int = None  # validation images (0: all 5,000)
student_weights: str = None  # student backbone init: "imagenet", a checkpoint, or "none"
substitute: dict = None  # backbone stand-ins, e.g. {"R101": "R34"} (demos only)
nproc_per_node: int = None  # GPUs per run (>1: one torchrun job per run)
device: str = None  # "auto" (CUDA when present) or "cpu"
amp: str = None  # "bf16" (backbones under autocast on CUDA) or "off"
workers: int = None  # DataLoader workers per process
log_every: int = None  # iterations per log line
checkpoint_every: int = None  # iterations per checkpoint

# %%
p = study.parameters("80_coco", globals())  # every parameter left at None: the profile's
paths = study.StudyPaths.of(p.profile, p.results_dir)
root = coco_data_root(p.data_root, paths)
options = dict(kind=p.kind, images_per_batch=p.images_per_batch,
               train_min_sizes=p.train_min_sizes, test_min_size=p.test_min_size,
               max_size=p.max_size, roi_batch_per_image=p.roi_batch_per_image,
               train_limit=p.train_limit, val_limit=p.val_limit,
               student_weights=p.student_weights, device=p.device, amp=p.amp,
               workers=p.workers, log_every=p.log_every, checkpoint_every=p.checkpoint_every)
study.print_banner("MS-COCO detection table", p.profile, coco_deviations(p), p.overrides)
teachers = plan_teachers(p.pairs, p.teacher_checkpoints, paths, data_root=root,
                         iteration_scale=p.iteration_scale, seed=p.seeds[0],
                         substitute=p.substitute, **options)
print(f"data: {root}\n{len(teachers)} teacher run(s) to train first")

# %% [markdown]
# ## Teachers without a checkpoint (trained by the same engine)

# %%
teacher_records = run_detection(teachers, p.nproc_per_node, paths.root / "configs")

# %% [markdown]
# ## The table's runs (one line per log interval; the box AP at the end of each run)

# %%
students = plan_students(p.pairs, p.methods, p.seeds, p.teacher_checkpoints, paths,
                         data_root=root, iteration_scale=p.iteration_scale,
                         matched_budget=p.matched_budget, substitute=p.substitute, **options)
print(f"{len(students)} run(s): " + ", ".join(c.run_id() for c in students))
records = run_detection(students, p.nproc_per_node, paths.root / "configs")

# %% [markdown]
# ## Results (the same table goes into the report)

# %%
display(HTML(detection_html(detection_table(detection_frame(paths.results_dir, p.profile)))))
