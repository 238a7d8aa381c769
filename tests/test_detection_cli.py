"""``python -m ckd_lib.detection.train``: recipes as printed configs, bad input, a real tiny run.
(The COCO timing of ``benchmarks/device_check.py`` is tested in ``tests/test_device_check.py``.)

The expected recipe values are read from the CSV files here, independently of
``ckd_lib.recipes``, and the paper's numbers are also written out, so an edit of the table or of
the parser shows.
"""

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ckd_lib
from ckd_lib import results
from ckd_lib.detection import engine
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.shapes import make_shapes_dataset
from ckd_lib.detection.train import main

RESOURCES = Path(ckd_lib.__file__).parent / "resources"
REPO = Path(__file__).resolve().parents[1]


def csv_row(name, teacher, student, method):
    with open(RESOURCES / name, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] == "coco"
                and r["teacher"] == teacher and r["student"] == student
                and r["method"] == method]
    assert len(rows) == 1, (name, teacher, student, method, rows)
    return rows[0]


def schedule(text):
    """'360k_iters_steps_240k_320k' -> (360000, [240000, 320000])"""
    match = re.fullmatch(r"(\d+)k_iters_steps((?:_\d+k)+)", text)
    assert match, text
    return int(match[1]) * 1000, [int(s) * 1000 for s in re.findall(r"(\d+)k", match[2])]


def loss_params(text):
    out = {}
    for item in filter(None, text.split(";")):
        key, value = item.split("=", 1)
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def printed_config(capsys, *argv):
    code = main([*argv, "--print-config"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return yaml.safe_load(captured.out)


def failing(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out, captured.err)
    assert captured.err.startswith("error: ")
    return captured.err


@pytest.fixture
def one_thread():
    """One torch thread while a model trains: on a busy 2-core machine, two OpenMP threads
    waiting for each other are many times slower (the DDP tests run one thread per rank)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, seed=0)


# --- recipes -----------------------------------------------------------------------------------

def test_print_config_is_the_r101_r18_reviewkd_ckd_row(capsys):
    row = csv_row("recipes.csv", "R101", "R18", "ReviewKD+CKD")
    iterations, milestones = schedule(row["schedule"])
    params = loss_params(row["loss_params"])
    # the paper's cell, as the table holds it
    assert (iterations, milestones) == (360000, [240000, 320000])
    assert (float(row["lr"]), int(row["batch"])) == (0.01, 4)
    assert (params["ckd_weight"], params["temperature"], params["reviewkd_weight"]) == (
        0.1, 1.0, 1.2)

    printed = printed_config(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD",
                             "--set", "data_root=/nonexistent",
                             "--set", "teacher_checkpoint=teachers/r101.pth")
    assert printed["data_root"] == "/nonexistent"
    assert (printed["teacher"], printed["student"], printed["method"]) == (
        "resnet101", "resnet18", "ReviewKD+CKD")
    assert printed["iterations"] == iterations
    assert printed["milestones"] == milestones
    assert printed["lr"] == float(row["lr"])
    assert printed["images_per_batch"] == int(row["batch"])
    assert printed["weight_decay"] == float(row["weight_decay"])
    assert set(printed["loss"]) == set(params)
    for key, value in params.items():  # numbers as numbers, the descriptive applied_to as text
        assert (float(printed["loss"][key]) if isinstance(value, float)
                else printed["loss"][key]) == value, key
    # the printed YAML is a config the CLI takes back unchanged
    assert DetectionConfig.from_dict(printed).config_hash() == DetectionConfig.from_recipe(
        "R101", "R18", "ReviewKD+CKD", data_root="/nonexistent",
        teacher_checkpoint="teachers/r101.pth").config_hash()


def test_print_config_of_a_recipe_needs_no_teacher_checkpoint(capsys):
    printed = printed_config(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD",
                             "--set", "data_root=/nonexistent")
    assert printed["iterations"] == 360000


def test_iterations_scale_the_milestones(capsys):
    printed = printed_config(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD",
                             "--iterations", "36000", "--set", "data_root=/nonexistent",
                             "--set", "teacher_checkpoint=teachers/r101.pth")
    assert printed["iterations"] == 36000
    assert printed["milestones"] == [24000, 32000]
    assert printed["lr"] == 0.01 and printed["images_per_batch"] == 4


def test_teacher_recipe_is_the_derived_3x_row(capsys):
    row = csv_row("recipes_derived.csv", "", "R101", "teacher")
    assert row["source"].startswith("derived")
    iterations, milestones = schedule(row["schedule"])
    printed = printed_config(capsys, "--recipe", "none", "R101", "teacher")
    assert printed["method"] == "baseline"
    assert printed["teacher"] is None and printed["teacher_checkpoint"] is None
    assert printed["student"] == "resnet101"
    assert (printed["lr"], printed["images_per_batch"]) == (float(row["lr"]), int(row["batch"]))
    assert (printed["lr"], printed["images_per_batch"]) == (0.02, 16)
    assert (printed["iterations"], printed["milestones"]) == (iterations, milestones)
    assert printed["iterations"] == 270000


# --- bad input: exit status 2, the bad value and what is accepted --------------------------------

def test_unknown_method_exits_2_naming_it_and_the_accepted_cells(capsys):
    err = failing(capsys, "--recipe", "R101", "R18", "Foo", "--print-config")
    assert "'Foo'" in err
    assert "R101->R18:ReviewKD+CKD" in err and "R101->R18:DKD" in err


def test_unknown_method_exit_status_of_the_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ckd_lib.detection.train", "--recipe", "R101",
                           "R18", "Foo"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "'Foo'" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_backbone_in_a_config_file(capsys, tmp_path, shapes_root):
    config = DetectionConfig(data_root=str(shapes_root), student="resnet18",
                             student_weights=None, out_dir=str(tmp_path / "runs"))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    err = failing(capsys, "--config", str(path), "--set", "student=resnet9")
    assert "'resnet9'" in err
    assert all(name in err for name in ("resnet18", "resnet50", "resnet101", "mobilenet_v2"))
    assert not (tmp_path / "runs").exists()


def test_unknown_backbone_with_a_recipe(capsys):
    err = failing(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD", "--set", "student=resnet9",
                  "--set", "teacher_checkpoint=untrained", "--print-config")
    assert "'resnet9'" in err and "resnet18" in err


def test_missing_data_root_names_the_missing_paths(capsys, tmp_path):
    root = tmp_path / "no_coco_here"
    err = failing(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD",
                  "--set", f"data_root={root}", "--set", "teacher_checkpoint=untrained")
    assert str(root / "train2017") in err
    assert str(root / "annotations" / "instances_val2017.json") in err


def test_missing_teacher_checkpoint_names_the_file_and_the_sources(capsys, tmp_path,
                                                                    shapes_root):
    missing = tmp_path / "teachers" / "r101_fpn_3x.pth"
    err = failing(capsys, "--recipe", "R101", "R18", "ReviewKD+CKD",
                  "--set", f"data_root={shapes_root}", "--set", f"teacher_checkpoint={missing}")
    assert str(missing) in err
    assert "untrained" in err and "torchvision" in err


def test_iterations_is_not_ignored_with_a_config_file(capsys, tmp_path):
    config = DetectionConfig(data_root="/nonexistent", student="resnet18", iterations=90000,
                             milestones=(60000, 80000))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    code = main(["--config", str(path), "--iterations", "9000", "--print-config"])
    captured = capsys.readouterr()
    # either applied (milestones in proportion) or refused; not silently dropped
    assert code == 2 or yaml.safe_load(captured.out)["iterations"] == 9000


# --- a real tiny run through the CLI ---------------------------------------------------------

def test_tiny_run_then_the_same_command_returns_the_record(capsys, tmp_path, shapes_root,
                                                           monkeypatch, one_thread):
    config = DetectionConfig(
        data_root=str(shapes_root), student="resnet18", student_weights=None, method="CKD",
        teacher="resnet18", teacher_checkpoint="untrained", iterations=2, milestones=(1,),
        lr=0.01, warmup_iterations=1, images_per_batch=2, train_min_sizes=(96, 128),
        test_min_size=128, max_size=160, device="cpu", amp="off", workers=0,
        checkpoint_every=2, log_every=1, out_dir=str(tmp_path / "runs"), val_limit=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    argv = ["--config", str(path)]

    assert main(argv) == 0
    out = capsys.readouterr().out
    run_id = config.run_id()
    record_file = results.record_path(config.out_dir, run_id)
    record = results.read_record(record_file)
    assert record["status"] == "complete" and record["iterations_done"] == 2
    assert record["config"] == config.to_dict()
    assert [e["iteration"] for e in record["train_log"]] == [1, 2]
    assert all("loss_ckd" in e and math.isfinite(e["loss"]) for e in record["train_log"])
    assert "iteration 2/2" in out
    assert f"{run_id}: complete, box AP" in out
    assert (record_file.parent / "model_last.pth").is_file()
    stamp, text = record_file.stat().st_mtime_ns, record_file.read_text()

    # Again: nothing is built or trained (building a detector would raise here).
    def no_model(*args, **kwargs):
        raise AssertionError("a finished run built a model")

    monkeypatch.setattr(engine, "build_detector", no_model)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"{run_id}: complete, box AP {record['last']['AP']:.2f}"
    assert (record_file.stat().st_mtime_ns, record_file.read_text()) == (stamp, text)
