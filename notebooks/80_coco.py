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

# %%
from IPython.display import HTML, display

from ckd_lib.report.detection import detection_frame, detection_html, detection_table
from ckd_lib.study import StudyPaths
from ckd_lib.study.coco import coco_data_root, plan_students, plan_teachers, run_detection
from ckd_lib.study.plan import _display_alert

# %% tags=["parameters"]
profile: str = "coco"  # profile name: runs go to <results_dir>/<profile>/detection
results_dir: str = "results"  # root of the results tree (relative paths: from the repository)
data_root: str = ""  # COCO 2017 root ("": $CKD_DATA_ROOT/coco, else data/coco; "shapes": generated)
kind: str = "faster_rcnn"  # "faster_rcnn" or "mask_rcnn"
pairs: list[str] = ["R101->R18", "R101->R50", "R50->MobileNetV2"]  # "TEACHER->STUDENT"
methods: list[str] = ["baseline", "DKD", "ReviewKD+CKD"]  # "baseline": the student alone
seeds: list[int] = [0]  # seeds of each cell
teacher_checkpoints: dict = {"R101": "", "R50": "torchvision"}  # "": train it here first
matched_budget: bool = False  # every method at the ReviewKD+CKD iterations of its pair
iteration_scale: float = 1.0  # multiplies the recipes' iterations and milestones (1: published)
images_per_batch: int = 0  # global batch over all GPUs (0: the recipe's)
train_min_sizes: list[int] = []  # training shorter sides ([]: 640..800, the recipe's)
test_min_size: int = 0  # test shorter side (0: 800)
max_size: int = 0  # longer-side cap (0: 1333)
roi_batch_per_image: int = 0  # RoIs sampled per image (0: 512, the recipe's)
train_limit: int = 0  # training images (0: all)
val_limit: int = 0  # validation images (0: all 5,000)
student_weights: str = "imagenet"  # student backbone init: "imagenet", a checkpoint, or "none"
substitute: dict = {}  # backbone stand-ins, e.g. {"R101": "R34"} (demos only)
nproc_per_node: int = 1  # GPUs per run (>1: one torchrun job per run)
device: str = "auto"  # "auto" (CUDA when present) or "cpu"
amp: str = "bf16"  # "bf16" (backbones under autocast on CUDA) or "off"
workers: int = 4  # DataLoader workers per process
log_every: int = 20  # iterations per log line
checkpoint_every: int = 5000  # iterations per checkpoint

# %%
paths = StudyPaths.of(profile, results_dir)
root = coco_data_root(data_root, paths)
options = dict(kind=kind, images_per_batch=images_per_batch, train_min_sizes=train_min_sizes,
               test_min_size=test_min_size, max_size=max_size,
               roi_batch_per_image=roi_batch_per_image, train_limit=train_limit,
               val_limit=val_limit, student_weights=student_weights, device=device, amp=amp,
               workers=workers, log_every=log_every, checkpoint_every=checkpoint_every)
departures = {k: v for k, v in dict(
    data=data_root if data_root.startswith("shapes") else None,
    iteration_scale=None if iteration_scale == 1.0 else iteration_scale,
    images_per_batch=images_per_batch, train_min_sizes=train_min_sizes,
    test_min_size=test_min_size, max_size=max_size, roi_batch_per_image=roi_batch_per_image,
    train_limit=train_limit, val_limit=val_limit, substitute=substitute,
    student_weights=None if student_weights == "imagenet" else student_weights).items() if v}
if departures:
    _display_alert("NOT THE PAPER'S SETTING", [f"{k}={v}" for k, v in departures.items()])
teachers = plan_teachers(pairs, teacher_checkpoints, paths, data_root=root,
                         iteration_scale=iteration_scale, seed=seeds[0], substitute=substitute,
                         **options)
print(f"data: {root}\n{len(teachers)} teacher run(s) to train first")

# %% [markdown]
# ## Teachers without a checkpoint (trained by the same engine)

# %%
teacher_records = run_detection(teachers, nproc_per_node, paths.root / "configs")

# %% [markdown]
# ## The table's runs (one line per log interval; the box AP at the end of each run)

# %%
students = plan_students(pairs, methods, seeds, teacher_checkpoints, paths, data_root=root,
                         iteration_scale=iteration_scale, matched_budget=matched_budget,
                         substitute=substitute, **options)
print(f"{len(students)} run(s): " + ", ".join(c.run_id() for c in students))
records = run_detection(students, nproc_per_node, paths.root / "configs")

# %% [markdown]
# ## Results (the same table goes into the report)

# %%
display(HTML(detection_html(detection_table(detection_frame(paths.results_dir, profile)))))
