"""``benchmarks/device_check.py``: its CPU dry run end to end, its time guard, and its parts.

The dry run runs as the GPU machine will run it: a plain ``python benchmarks/device_check.py``
subprocess, here with tqdm and pycocotools made unimportable (the machine is only promised
torch, torchvision, numpy, Pillow, PyYAML and pandas).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.py"
sys.path.insert(0, str(REPO))

from benchmarks import device_check  # noqa: E402
from benchmarks.checks import coco, report, targets  # noqa: E402
from benchmarks.checks.jpeg_folder import link_copies, make_imagefolder  # noqa: E402

HIDE = '''import sys

# As if these packages were not installed: importing them fails, find_spec finds nothing.
for name in ("tqdm", "tqdm.auto", "pycocotools", "pycocotools.coco", "pycocotools.cocoeval",
             "pycocotools.mask"):
    sys.modules[name] = None
'''
ROW_KEYS = {"key", "section", "figure", "value", "unit", "target", "verdict"}
EXPECTED_KEYS = [
    "cifar.reference_train_s", "cifar.fast_train_s", "cifar.three_students_ratio",
    "imagenet.decode_max_diff", "imagenet.ceiling_img_s", "imagenet.e2e_torch_img_s",
    "imagenet.e2e_nvjpeg_img_s", "imagenet.loader_torch_img_s", "imagenet.loader_nvjpeg_img_s",
    "imagenet.faster_loader", "capture.graph_vs_eager", "capture.torch", "capture.nvjpeg",
    "coco.baseline_s_per_it", "coco.DKD_s_per_it", "coco.ReviewKD+CKD_s_per_it",
    "coco.ReviewKD+CKD_peak_gib", "gpu_hours.imagenet_faster_loader",
    "gpu_hours.coco_reviewkd_ckd"]
TARGET_KEYS = ["cifar.fast_train_s", "imagenet.e2e_torch_img_s", "imagenet.e2e_nvjpeg_img_s",
               "capture.torch", "capture.nvjpeg", "coco.ReviewKD+CKD_s_per_it"]


def run_script(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    hide = tmp_path / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(HIDE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(hide), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_prints_one_table_and_writes_the_json(tmp_path):
    out = tmp_path / "check.json"
    proc = run_script(tmp_path, "--dry-run", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    for key in ("card", "torch", "torchvision", "cuda", "cudnn", "date", "python", "cpu_cores",
                "sections", "rows", "gpu_hours"):
        assert key in summary, key
    assert summary["dry_run"] and summary["card"] == "cpu"
    assert list(summary["sections"]) == list(device_check.SECTIONS)
    assert {s["status"] for s in summary["sections"].values()} == {"ok"}
    rows = {row["key"]: row for row in summary["rows"]}
    assert all(set(row) == ROW_KEYS for row in summary["rows"])
    assert [k for k in EXPECTED_KEYS if k not in rows] == []
    for key in TARGET_KEYS:  # a CPU says nothing about a GPU target
        assert rows[key]["target"] and rows[key]["verdict"] == targets.DRY, key
    for key in ("cifar.fast_train_s", "imagenet.ceiling_img_s", "imagenet.e2e_nvjpeg_img_s",
                "imagenet.loader_nvjpeg_img_s", "coco.ReviewKD+CKD_s_per_it"):
        assert rows[key]["value"] > 0, key
    assert rows["imagenet.decode_max_diff"]["value"] <= 2  # the CPU decoder against PIL
    # the train loader of the nvjpeg run sent the four odd files to PIL, the rest to decode_jpeg
    counts = summary["sections"]["imagenet"]["figures"]["imagenet.e2e_nvjpeg_img_s"]["detail"][
        "decode_counts"]
    assert counts["worker_pil"] == 3 * 2 and counts["device"] > 0  # 2 epochs; PNG, CMYK, grey
    notes = [n for s in summary["sections"].values() for n in s["notes"]]
    assert any("tqdm is not installed" in n for n in notes)
    # one table: a header, a rule, then one line per row, in order
    table = proc.stdout[proc.stdout.index("section  "):proc.stdout.index("\nwrote ")]
    lines = table.strip().splitlines()
    assert lines[0].split() == list(report.COLUMNS) and set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(summary["rows"])
    for line, row in zip(lines[2:], summary["rows"], strict=True):
        assert line.startswith(row["section"]) and row["figure"] in line


FAKE_SECTION = """import argparse, json, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--section"); parser.add_argument("--result"); parser.add_argument("--work")
parser.add_argument("--deadline-s", type=float)
parser.add_argument("--dry-run", action="store_true")
args, _ = parser.parse_known_args()
row = {"key": "fake.first", "section": "fake", "figure": "measured before the hang",
       "value": 1.0, "unit": "s", "target": "", "verdict": ""}
with open(args.result, "w") as f:
    json.dump({"section": "fake", "status": "running", "rows": [row],
               "figures": {"fake.first": 1.0}, "notes": []}, f)
print("about to", sys.argv[-1], flush=True)
if sys.argv[-1] == "crash":
    raise RuntimeError("the section broke")
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(args.work + "/helper.pid", "w").write(str(helper.pid))
time.sleep(120)
"""


def process_gone(pid: int, wait_s: float = 10.0) -> bool:
    """Whether ``pid`` is dead (gone, or a zombie waiting for a reaper) within ``wait_s``: a
    SIGKILLed process still takes a moment to exit on a loaded machine."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "State:\tZ" in state or time.monotonic() > deadline:
            return "State:\tZ" in state
        time.sleep(0.1)


def test_a_hanging_section_is_killed_with_its_children_and_keeps_its_figures(tmp_path):
    from benchmarks.checks.runner import run_section

    script = tmp_path / "fake_section.py"
    script.write_text(FAKE_SECTION)
    result = run_section("fake", 4.0, tmp_path, True, ["hang"], script=script)
    assert result["status"] == "timeout" and 4.0 <= result["seconds"] < 10
    assert "killed by the time guard after 4 s" in result["error"] and "about to hang" in (
        result["error"])
    assert [r["key"] for r in result["rows"]] == ["fake.first"]  # recorded before the hang
    helper = int((tmp_path / "fake" / "helper.pid").read_text())
    assert process_gone(helper)  # the whole process group went
    crashed = run_section("fake", 30.0, tmp_path, True, ["crash"], script=script)
    assert crashed["status"] == "error" and "RuntimeError: the section broke" in (
        crashed["error"])
    assert crashed["seconds"] < 20
    row = device_check.status_row("fake", crashed)
    assert row["verdict"] == "FAIL" and "RuntimeError: the section broke" in row["figure"]


def test_bad_arguments_name_the_accepted_values(capsys):
    with pytest.raises(SystemExit):
        device_check.parse_args(["--sections", "cifar", "gpu"])
    assert "unknown section 'gpu'; accepted: cifar, imagenet, capture, coco" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        device_check.parse_args(["--imagenet-images", "100"])
    assert device_check.parse_args(["--dry-run"]).time_limit == device_check.DRY_TIME_LIMIT_S
    assert sum(device_check.SHARES.values()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- parts
def test_verdicts_against_the_issue_targets():
    assert targets.cifar_verdict(1.814, True) == "PASS"  # 1.81 at the record's precision
    assert targets.cifar_verdict(1.816, True) == "FAIL"
    assert targets.cifar_verdict(1.0, False) == targets.DRY
    assert targets.cifar_verdict(None, True) == "not measured"
    assert targets.imagenet_verdict(8000, 10000, True) == "PASS"
    assert targets.imagenet_verdict(7999, 10000, True) == "FAIL"
    assert targets.imagenet_verdict(7999, None, True) == "not measured"
    assert targets.coco_verdict(1.5, True) == "PASS" and targets.coco_verdict(1.51, True) == "FAIL"


def test_gpu_hours_follow_from_the_figures():
    figures = {"imagenet.e2e_torch_img_s": 1347.0,
               "imagenet.e2e_nvjpeg_img_s": {"value": 7200.0, "detail": {}},
               "imagenet.ceiling_img_s": 9104.0, "coco.ReviewKD+CKD_s_per_it": 0.25}
    rows, hours = report.gpu_hours(figures, dry_run=False)
    # recipes.csv: 200 epochs for ImageNet CKD; 360k iterations of 4 images for COCO
    assert hours["imagenet_faster_loader"] == pytest.approx(200 * 1_281_167 / 7200 / 3600)
    assert hours["imagenet_ceiling"] == pytest.approx(200 * 1_281_167 / 9104 / 3600)
    assert hours["coco_reviewkd_ckd"] == pytest.approx(360_000 * 0.25 / 3600)
    assert [r["unit"] for r in rows] == ["GPU-hours"] * 3
    _, none = report.gpu_hours({}, dry_run=False)
    assert set(none.values()) == {None}


def test_values_are_formatted_for_the_table():
    assert [report.format_value(v) for v in (None, 9103.86, 1.8113, 0.0123456, 12, "PASS")] == [
        "-", "9,104", "1.811", "0.0123", "12", "PASS"]
    assert report.slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    env = {"card": "NVIDIA H200", "date": "2026-12-01"}
    assert report.default_out(env, False, Path("b"), Path("t")) == Path(
        "b/device_check_nvidia_h200_2026-12-01.json")


def test_generated_jpegs_look_like_imagenet(tmp_path):
    stats = make_imagefolder(tmp_path, 10, 2, 2, processes=1)
    assert stats["files"] == 12 and 30 < stats["mean_kb"] < 200
    files = sorted((tmp_path / "imagenet" / "train").rglob("*.JPEG"))
    assert len(files) == 10 and len(list((tmp_path / "imagenet" / "val").rglob("*.JPEG"))) == 2
    kinds = []
    for path in files:
        with Image.open(path) as image:
            assert max(image.size) == 500 and 333 <= min(image.size) <= 500
            kinds.append((image.format, image.mode, bool(image.info.get("progressive"))))
    assert kinds[:4] == [("JPEG", "CMYK", False), ("JPEG", "L", False), ("PNG", "RGB", False),
                         ("JPEG", "RGB", True)]
    assert set(kinds[4:]) == {("JPEG", "RGB", False)}
    pixels = np.asarray(Image.open(files[5]))
    assert pixels.std() > 20  # not a flat colour
    assert link_copies(tmp_path, 3) == 30  # each training file listed three times
    copies = sorted((tmp_path / "imagenet" / "train").rglob("*_copy2.JPEG"))
    assert len(copies) == 10 and copies[0].read_bytes() == files[0].read_bytes()


def test_coco_batches_have_the_recipe_sizes():
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        images, batch_targets = coco.random_batch(generator, 4, (640, 800), 1333)
        assert len(images) == len(batch_targets) == 4
        for image, target in zip(images, batch_targets, strict=True):
            assert image.dtype == torch.float32 and image.shape[0] == 3
            h, w = image.shape[1:]
            assert 640 <= min(h, w) <= 800 and max(h, w) <= 1333
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            boxes, labels = target["boxes"], target["labels"]
            assert boxes.shape == (len(labels), 4) and 2 <= len(labels) <= 12
            assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
            assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all()
                        and (boxes[:, 3] <= h).all())
            assert bool(((labels >= 1) & (labels <= 80)).all())
    again = coco.random_batch(torch.Generator().manual_seed(3), 4, (640, 800), 1333)
    first = coco.random_batch(torch.Generator().manual_seed(3), 4, (640, 800), 1333)
    assert all(torch.equal(a, b) for a, b in zip(again[0], first[0], strict=True))
