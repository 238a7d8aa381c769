"""The COCO notebook: teachers trained first, the table's runs, and the report's COCO table."""

from __future__ import annotations

import jupytext
import nbformat
import pandas as pd
import papermill
import pytest

from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.models import COCO_CATEGORY_IDS
from ckd_lib.detection.shapes import make_shapes_dataset
from ckd_lib.report.detection import (
    departures,
    detection_banner_html,
    detection_frame,
    detection_html,
    detection_table,
)
from ckd_lib.study import StudyPaths
from ckd_lib.study.coco import plan_students, plan_teachers
from ckd_lib.study.paths import notebooks_dir
from ckd_lib.study.plan import StudyError


def test_students_follow_the_recipes_and_matched_budget_equalises_iterations(tmp_path):
    paths = StudyPaths.of("p", tmp_path)
    checkpoints = {"R101": "r101.pth", "R50": "torchvision"}
    own = plan_students(["R101->R18", "R50->MobileNetV2"], ["baseline", "DKD", "ReviewKD+CKD"],
                        [0, 1], checkpoints, paths, data_root=str(tmp_path))
    assert len(own) == 2 * 3 * 2
    by = {(c.teacher, c.student, c.method, c.seed): c for c in own}
    assert by[("resnet101", "resnet18", "ReviewKD+CKD", 0)].iterations == 360000
    assert by[("resnet101", "resnet18", "DKD", 1)].iterations == 180000
    assert by[("resnet101", "resnet18", "DKD", 1)].teacher_checkpoint == "r101.pth"
    assert by[("resnet50", "mobilenet_v2", "DKD", 0)].teacher_checkpoint == "torchvision"
    assert by[(None, "resnet18", "baseline", 0)].teacher is None
    assert all(c.out_dir == str(tmp_path / "p" / "detection") for c in own)
    matched = plan_students(["R101->R18"], ["baseline", "DKD"], [0], checkpoints, paths,
                            data_root=str(tmp_path), matched_budget=True)
    assert {(c.iterations, c.milestones) for c in matched} == {(360000, (240000, 320000))}
    with pytest.raises(StudyError, match="'R101-R18'.*TEACHER->STUDENT"):
        plan_students(["R101-R18"], ["DKD"], [0], checkpoints, paths, data_root=".")


def test_only_teachers_without_checkpoint_are_planned_with_the_teacher_recipe(tmp_path):
    paths = StudyPaths.of("p", tmp_path)
    root = str(make_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=2))
    (teacher,) = plan_teachers(["R101->R18", "R101->R50", "R50->MobileNetV2"],
                               {"R101": "", "R50": "torchvision"}, paths, data_root=root)
    assert (teacher.student, teacher.teacher, teacher.method) == ("resnet101", None, "baseline")
    assert (teacher.iterations, teacher.lr, teacher.images_per_batch) == (270000, 0.02, 16)
    assert teacher.label == "coco teacher"
    # every seed of every student distils from the one teacher run (trained with seed 0)
    students = plan_students(["R101->R18"], ["DKD", "ReviewKD+CKD"], [0, 1], {"R101": ""},
                             paths, data_root=root)
    assert len(students) == 4
    assert {s.teacher_checkpoint for s in students} == {str(
        tmp_path / "p" / "detection" / teacher.run_id() / "model_last.pth")}


@pytest.mark.notebooks
def test_coco_notebook_trains_teacher_then_students_and_the_report_shows_them(tmp_path):
    notebook = jupytext.read(notebooks_dir() / "80_coco.py")
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                       "display_name": "Python 3"}
    source = tmp_path / "80_coco.ipynb"
    nbformat.write(notebook, source)
    executed = tmp_path / "executed.ipynb"
    results_dir = tmp_path / "results"
    papermill.execute_notebook(
        str(source), str(executed), kernel_name="python3", progress_bar=False,
        parameters={"profile": "coco_demo", "results_dir": str(results_dir),
                    "data_root": "shapes:train=6,val=3", "pairs": ["R101->R18"],
                    "methods": ["baseline", "ReviewKD+CKD"],
                    "teacher_checkpoints": {"R101": ""}, "substitute": {"R101": "R18"},
                    "iteration_scale": 0.00001, "images_per_batch": 2,
                    "train_min_sizes": [64], "test_min_size": 64, "max_size": 96,
                    "roi_batch_per_image": 32, "student_weights": "none", "device": "cpu",
                    "amp": "off", "workers": 0, "log_every": 1, "checkpoint_every": 2})
    frame = detection_frame(results_dir, "coco_demo")
    assert sorted(zip(frame["label"], frame["method"], strict=True)) == [
        ("coco", "ReviewKD+CKD"), ("coco", "baseline"), ("coco teacher", "baseline")]
    teacher_run = frame[frame["label"] == "coco teacher"].iloc[0]
    distilled = frame[frame["method"] == "ReviewKD+CKD"].iloc[0]
    # the distillation run's teacher is the teacher run's own weights
    assert distilled["teacher_checkpoint"].endswith(f"{teacher_run['run_id']}/model_last.pth")
    assert distilled["iterations"] == 4 and teacher_run["iterations"] == 3  # 360k, 270k x 1e-5
    table = detection_table(frame)
    assert len(table.rows) == 1 and table.methods == ["baseline", "ReviewKD+CKD"]
    html = detection_html(table)
    for run_id in frame[frame["label"] == "coco"]["run_id"]:
        assert run_id in html
    for link in frame["link"]:  # relative to the profile's folder, where its report.html is
        assert (results_dir / "coco_demo" / link).is_file()
    text = executed.read_text()
    assert "NOT THE PAPER&#x27;S SETTING" in text or "NOT THE PAPER'S SETTING" in text
    assert "MS-COCO detection" in text


def test_the_report_says_whether_coco_runs_are_the_papers_setting():
    paper = DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root="data/coco",
                                        teacher_checkpoint="r101.pth")
    record = {"config": paper.to_dict(), "data": {"categories": list(COCO_CATEGORY_IDS)}}
    assert departures(record) == []
    short = DetectionConfig.from_recipe("R101", "R18", "ReviewKD+CKD", data_root="data/coco",
                                        teacher_checkpoint="untrained", iterations=1000,
                                        student_weights=None, val_limit=50)
    found = departures({"config": short.to_dict(), "data": {"categories": [1, 3, 7]}})
    assert found == ["not COCO's 80 categories (generated or other data)", "image subsets",
                     "students from scratch (no ImageNet backbone)", "UNTRAINED teacher",
                     "shortened schedules"]
    assert "published recipes" in detection_banner_html(pd.DataFrame({"departures": [[]]}))
    assert "NOT in the paper's setting (UNTRAINED teacher)" in detection_banner_html(
        pd.DataFrame({"departures": [[], ["UNTRAINED teacher"]]})).replace("&#x27;", "'")
