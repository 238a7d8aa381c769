"""Rehearsals (``python -m ckd_lib.study --profile NAME --rehearse``): every run of a profile, a
few steps each, on generated data of the real shapes.

What is checked: the rehearsal plans the profile's job graph run for run and job for job
(paper: 453 runs in 198 jobs) with its real models, generated data of the true shapes, batches
divided on the CPU and its own run ids; the generated ImageNet folder (1000 classes read at 224)
and COCO images (the 80 COCO categories and ids, 480-640 pixels); the refusal of a rehearsal's
teacher for a real run; the cost arithmetic of measured step times; and, end to end through the
command line, a slice of the paper profile covering every model it trains and every method's
terms (the CI slice, a few minutes on 2 cores; the full rehearsals are benchmarks,
``benchmarks/RESULTS.md``), and a small profile rehearsed through a real one-node SLURM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ckd_lib import results
from ckd_lib.config import RunConfig
from ckd_lib.data import load_imagefolder_dataset
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.models import COCO_CATEGORY_IDS
from ckd_lib.detection.shapes import make_shapes_dataset
from ckd_lib.study import cost, planning, rehearse
from ckd_lib.study.profiles import load_profile
from ckd_lib.study.runner import Runner

# one worker for the tiny-study group: its SLURM cluster never runs beside test_slurm's (conftest)
pytestmark = pytest.mark.xdist_group("tiny_study")

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The CI slice: every model the paper profile trains (its six teachers, its nine students) and
# every method's terms once (CE: the teachers; KD, DKD; CKD and its ablation variants; KD+CKD;
# CKD+ReviewKD), one seed.
SLICE = """\
description: the CI slice of the paper profile (tests/test_rehearse.py)
extends: paper
common:
  seeds: [0]
notebooks:
  00_environment: {}
  10_teachers: {}
  20_same_arch:
    pairs: ["resnet56->resnet20", "resnet110->resnet32", "resnet32x4->resnet8x4",
            "wrn_40_2->wrn_16_2", "wrn_40_2->wrn_40_1", "vgg13->vgg8"]
    methods: [KD]
  21_cross_arch:
    pairs: ["resnet32x4->ShuffleV1", "ResNet50->MobileNetV2", "resnet32x4->ShuffleV2"]
    methods: [DKD]
  30_ablations:
    temperatures: [2.0]
    cl_weights: []
    batch_sizes: [32]
    chunk_sizes: [16]
  40_matched_budget:
    pairs: ["resnet32x4->resnet8x4"]
    methods: [KD]
  50_efficiency: {}
  60_visualisations:
    methods: [KD]
  90_report: {}
"""


def shape(plan: planning.Plan) -> list[tuple]:
    return [(u.notebook, u.task, len(u.runs), len(plan.dependencies(u))) for u in plan.units]


def configs_of(plan: planning.Plan) -> list[dict]:
    return [c for u in plan.units for c in u.configs]


@pytest.fixture(scope="module")
def paper_plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plans")
    real = planning.collect(Runner(load_profile("paper"), results_dir=str(tmp)))
    rehearsal = planning.collect(Runner(load_profile("rehearse-paper"), results_dir=str(tmp)))
    return real, rehearsal


def test_the_paper_rehearsal_plans_every_run_of_the_paper_with_its_models(paper_plans):
    real, rehearsal = paper_plans
    assert rehearse.active() is None  # planning leaves this process as it found it
    # 453 runs in 198 jobs before issue 18's matched-budget rows at equal epochs and unequal
    # steps ("@ X's schedule, own batch": 3 runs per seed on each of the 5 batch-32 pairs)
    assert (len(real.units), sum(len(u.runs) for u in real.units)) == (223, 528)
    assert shape(rehearsal) == shape(real) and rehearse.compare_plans(real, rehearsal) == []
    assert [u.processes for u in rehearsal.units] == [u.processes for u in real.units]
    for a, b in zip(configs_of(real), configs_of(rehearsal), strict=True):
        # the same cell: models, method, loss (but chunks and warm-up), seed, label, schedule
        assert (a["teacher"], a["student"], a["method"], a["seed"], a["label"], a["schedule"]) \
            == (b["teacher"], b["student"], b["method"], b["seed"], b["label"], b["schedule"])
        scaled = ("chunk_size", "warmup_epochs")
        assert {k: v for k, v in a["loss"].items() if k not in scaled} == \
            {k: v for k, v in b["loss"].items() if k not in scaled}
        assert a["rehearsal"] == {} and b["rehearsal"] == {
            "profile": "paper", "device": "cpu", "dataset": "cifar100",
            "batch_size": a["batch_size"], "lr": a["lr"]}
        # CIFAR-100's shape: 100 classes of 32x32 generated images; batches / 8 on the CPU,
        # the lr with them
        assert b["dataset"] == "synthetic:num_classes=100,num_train=32,num_test=100"
        assert b["batch_size"] * 8 == a["batch_size"] and b["lr"] * 8 == pytest.approx(a["lr"])
        if a["loss"].get("chunk_size"):
            assert b["loss"]["chunk_size"] * 8 == a["loss"]["chunk_size"]
        # 240 epochs -> 1, 480 -> 2; step milestones inside them
        assert b["epochs"] == a["epochs"] // 240 and set(b["milestones"]) <= {1}
        warmup = a["loss"].get("warmup_epochs")
        if warmup:
            assert b["loss"]["warmup_epochs"] == 1
    ids = {r["run_id"] for u in real.units for r in u.runs}
    assert not ids & {r["run_id"] for u in rehearsal.units for r in u.runs}


def test_every_shipped_profile_rehearses_its_own_job_graph(tmp_path):
    """A rehearsal must never merge or drop runs (a schedule cut to one epoch could make two
    runs one): for each shipped profile, the same runs per job and the same dependencies."""
    for name in ("tiny", "demo", "quick", "imagenet_demo", "coco_demo"):
        real = planning.collect(Runner(load_profile(name), results_dir=str(tmp_path)))
        rehearsal = planning.collect(Runner(load_profile(f"rehearse-{name}"),
                                            results_dir=str(tmp_path)))
        assert rehearse.compare_plans(real, rehearsal) == [], name
        assert all(c["rehearsal"]["profile"] == name for c in configs_of(rehearsal))
    # and a departure is named, notebook by notebook
    merged = planning.Plan("x", [planning.Unit("20_same_arch", "classification", [{}],
                                               [{"run_id": "a", "out_dir": "o",
                                                 "teacher_checkpoint": ""}])])
    assert rehearse.compare_plans(real, merged)[-1] == (
        "20_same_arch: the profile plans 0 run(s) in 0 job(s), its rehearsal 1 in 1")


def test_the_imagenet_rehearsal_reads_a_generated_1000_class_folder_at_224(tmp_path):
    real = planning.collect(Runner(load_profile("imagenet"), results_dir=str(tmp_path)))
    rehearsal = planning.collect(Runner(load_profile("rehearse-imagenet"),
                                        results_dir=str(tmp_path)))
    assert rehearse.compare_plans(real, rehearsal) == []
    assert {u.processes for u in real.units} == {8} and {u.processes for u in rehearsal.units} \
        == {2}  # DDP: 2 gloo processes on the CPU
    for a, b in zip(configs_of(real), configs_of(rehearsal), strict=True):
        assert (a["teacher"], a["student"], a["method"]) == (b["teacher"], b["student"],
                                                             b["method"])
        assert b["batch_size"] == a["batch_size"] // 8 == b["train_subset"]
        assert b["epochs"] == a["epochs"] // 100 and b["teacher_checkpoint"] == "untrained"
    folder = configs_of(rehearsal)[0]["data_root"]
    train = load_imagefolder_dataset("imagenet", "train", folder)
    assert train.num_classes == 1000 and len(train) == 1000
    image, label = train[0]
    assert image.shape == (3, 224, 224) and 0 <= label < 1000


def test_the_coco_rehearsal_images_have_the_80_coco_categories_at_real_sizes(tmp_path):
    from ckd_lib.detection.coco import CocoDetection

    root = make_shapes_dataset(tmp_path / "coco", num_train=2, num_val=1, min_size=480,
                               max_size=640, categories="coco")
    data = CocoDetection(str(root), "train2017", train=False)
    assert list(data.category_ids) == list(COCO_CATEGORY_IDS)
    info = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    assert all(480 <= i["height"] <= 640 and 480 <= i["width"] <= 640 for i in info["images"])
    assert {a["category_id"] for a in info["annotations"]} <= set(COCO_CATEGORY_IDS)
    # the three-shape datasets keep their parameters (an existing one is not regenerated)
    plain = make_shapes_dataset(tmp_path / "plain", num_train=1, num_val=1)
    params = json.loads((plain / "annotations" / "instances_val2017.json").read_text())
    assert "categories" not in params["info"]["shapes_parameters"]
    assert [c["id"] for c in params["categories"]] == [1, 3, 7]


def test_profiles_that_cannot_be_rehearsed_are_refused_in_one_line(tmp_path):
    places = tmp_path / "places.yaml"
    places.write_text("extends: imagenet\nnotebooks:\n  70_imagenet:\n    dataset: places365\n"
                      "  90_report: {}\n")
    run = subprocess.run([PYTHON, "-m", "ckd_lib.study", "--profile", str(places), "--rehearse",
                          "--plan"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert "dataset 'places365' cannot be rehearsed" in run.stderr


def test_a_generated_folder_stands_in_for_imagenet_only(tmp_path):
    """Found by the rehearsal's design: a generated folder has ImageNet's layout, which the
    Places365 reader (torchvision's, md5-checked list files) never reads; the demo profile with
    places365 failed inside the torchrun job, far from its cause."""
    from ckd_lib.study.paths import StudyPaths
    from ckd_lib.study.plan import StudyError
    from ckd_lib.study.torchrun import folder_data_root

    paths = StudyPaths.of("x", tmp_path)
    with pytest.raises(StudyError, match="stands in for imagenet only, not 'places365'"):
        folder_data_root("generated", "places365", paths)
    with pytest.raises(StudyError, match="'val=x' is not one of classes=N, train=N, val=N"):
        folder_data_root("generated:val=x", "imagenet", paths)


def test_torchrun_jobs_are_relayed_once_and_fail_with_their_last_lines(tmp_path):
    """Found by the COCO rehearsal: each line of a detection torchrun job reached the runner's
    terminal twice (the job wrote to the kernel's own stdout, which the runner shows beside the
    notebook's copy), and a failed job was a bare CalledProcessError. Both job kinds now go
    through one relay."""
    from ckd_lib.study.plan import StudyError
    from ckd_lib.study.torchrun import run_torchrun

    script = "print('iteration 1/2 loss 3'); print('noise'); print('iteration 2/2'); exit(3)"
    lines: list[str] = []
    with pytest.raises(StudyError, match=r"torchrun failed \(exit 3\) for job.yaml:\n"
                                         r"iteration 1/2 loss 3\nnoise\niteration 2/2"):
        run_torchrun([PYTHON, "-c", script], "job.yaml", ("iteration",), lines.append)
    assert lines == [f"$ -c {script}", "iteration 1/2 loss 3", "iteration 2/2"]


def test_a_real_run_refuses_a_rehearsal_teacher_in_one_line(tmp_path):
    """The teacher checkpoint of a rehearsal run (its record beside it says so) is refused for
    a real run before anything loads; a rehearsal run, or the same file without that record,
    is accepted."""
    run_dir = tmp_path / "runs" / "synthetic-none-resnet8-CE-s0-abc"
    run_dir.mkdir(parents=True)
    model = run_dir / "model_last.pth"
    torch.save({"model": {}}, model)
    (run_dir / "record.json").write_text(json.dumps({
        "run_id": run_dir.name, "rehearsal": {"profile": "tiny"}, "config": {}}))
    common = ["--set", "dataset=synthetic:num_classes=4,num_train=16,num_test=8",
              "--set", "epochs=1", "--set", "milestones=[1]", "--set", "batch_size=8",
              "--set", "device=cpu",
              "--set", f"out_dir={tmp_path / 'out'}", "--set", f"teacher_checkpoint={model}"]
    run = subprocess.run([PYTHON, "-m", "ckd_lib.train", "--recipe", "cifar100", "resnet56",
                          "resnet20", "KD", *common, "--set", "teacher=resnet8", "--set",
                          "student=resnet8"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0
    assert f"holds the weights of rehearsal run {run_dir.name}" in run.stderr
    config = RunConfig(student="resnet8", method="KD", teacher="resnet8",
                       teacher_checkpoint=str(model), dataset="synthetic:num_classes=4")
    config.with_overrides({"rehearsal": {"profile": "tiny"}}).validate()  # a rehearsal: yes
    detection = DetectionConfig(data_root=str(tmp_path), student="resnet18", method="DKD",
                                teacher="resnet18", teacher_checkpoint=str(model))
    with pytest.raises(ValueError, match="holds the weights of rehearsal run"):
        detection.validate()
    (run_dir / "record.json").unlink()
    config.validate()  # the same file without a rehearsal record is a plain checkpoint


def test_a_rehearsal_field_makes_another_run_and_leaves_real_ids_alone():
    config = RunConfig.from_recipe("cifar100", "resnet32x4", "resnet8x4", "CKD",
                                   teacher_checkpoint="untrained")
    assert "rehearsal" not in config.hash_content()
    rehearsed = config.with_overrides({"rehearsal": {"profile": "paper", "batch_size": 64}})
    assert rehearsed.run_id() != config.run_id()


def test_measured_step_times_become_device_hours_for_the_real_jobs(tmp_path):
    """A rehearsal's step time at batch 8 standing for batch 64, scaled to the real job:
    epochs x (steps of the real data x time per step x 64/8 + evaluation), GPU figures from
    GPU rehearsals only, CPU figures in their own column."""
    configs = [RunConfig.from_recipe("cifar100", "resnet32x4", "resnet8x4", m,
                                     teacher_checkpoint="untrained").to_dict()
               for m in ("KD", "DKD")]
    unit = planning.Unit("20_same_arch", "classification", configs,
                         [{"run_id": m, "config_hash": "", "out_dir": "", "teacher_checkpoint": ""}
                          for m in ("KD", "DKD")])
    key = rehearse.key_of_configs("classification", configs)
    for device in ("cpu", "cuda"):
        (tmp_path / f"rehearse-paper-{device}.json").write_text(json.dumps({
            "what": "rehearsal", "profile": "paper", "device_type": device,
            "device": f"a {device}", "date": "2026-12-06", "commit": "abc", "units": [
                {"key": key, "device_seconds_per_step": 0.5 if device == "cpu" else 0.01,
                 "batch": 8 if device == "cpu" else 64, "stands_for_batch": 64,
                 "eval_seconds_per_image": 0.001}]}))
    cpu = cost.measured_rates(tmp_path, kind="cpu")
    gpu = cost.rehearsal_rates(tmp_path, "gpu")
    assert [r.device_type for r in cpu] == ["cpu"] and [r.device_type for r in gpu] == ["cuda"]
    steps = -(-50_000 // 64)
    hours, rate = cost.unit_hours(unit, cpu)
    assert rate is cpu[0]
    assert hours == pytest.approx(240 * (steps * 0.5 * 64 / 8 + 2 * 10_000 * 0.001) / 3600)
    hours, _ = cost.unit_hours(unit, gpu)
    assert hours == pytest.approx(240 * (steps * 0.01 + 2 * 10_000 * 0.001) / 3600)
    plan = planning.Plan("paper", [unit])
    text = cost.format_cost(plan, rates=gpu, cpu_rates=cpu)
    assert "CPU-h" in text and "NOT a GPU estimate" in text and "a cpu (cpu)" in text
    assert "a cuda (cuda): the rehearsal of profile paper" in text
    other = planning.Unit("20_same_arch", "classification", [dict(configs[0], batch_size=32)],
                          unit.runs[:1])
    assert cost.unit_hours(other, cpu) == (None, None)  # another batch: not measured


@pytest.mark.slow
def test_a_slice_of_the_paper_rehearsed_end_to_end(tmp_path):
    """The CI slice through the command line: its notebooks, its report, its records and its
    step times, then ``--plan`` of the slice itself with those step times."""
    profile = tmp_path / "slice.yaml"
    profile.write_text(SLICE)
    bench = tmp_path / "bench"
    env = {**os.environ, "CKD_BENCHMARKS_DIR": str(bench)}
    results_dir = tmp_path / "results"
    started = time.monotonic()
    run = subprocess.run([PYTHON, "-m", "ckd_lib.study", "--profile", str(profile),
                          "--rehearse", "--results-dir", str(results_dir)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    minutes = (time.monotonic() - started) / 60
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    root = results_dir / "rehearse-slice"
    assert "the same job graph as profile slice" in run.stdout
    records = results.load_records(root / "runs")
    assert records and all(r["rehearsal"]["profile"] == "slice" for r in records)
    # every model the paper profile trains, and every term of its methods
    paper = planning.collect(Runner(load_profile("paper"), results_dir=str(tmp_path / "p")))
    models = {c[k] for c in configs_of(paper) for k in ("teacher", "student") if c[k]}
    assert models == {r["config"][k] for r in records for k in ("teacher", "student")
                      if r["config"][k]}
    terms = {k for r in records for h in r["history"] for k in h if k.startswith("loss_")}
    assert {"loss_ce", "loss_kd", "loss_dkd", "loss_ckd", "loss_reviewkd"} <= terms
    assert {r["config"]["method"] for r in records} >= {"CE", "KD", "DKD", "CKD", "KD+CKD",
                                                       "CKD+ReviewKD"}
    # every page says rehearsal
    assert "REHEARSAL" in (root / "report.html").read_text()
    pages = sorted((root / "executed").glob("*.html"))
    assert len(pages) == 8 and all("REHEARSAL" in p.read_text() for p in pages)
    assert "REHEARSAL" in json.loads((root / "report.json").read_text())["headline"]
    # the step times, with device, date and commit, for every job
    data = json.loads((bench / "rehearse-slice-cpu.json").read_text())
    assert data["device_type"] == "cpu" and data["commit"] and data["date"]
    assert data["runs"] == len(records) and all(u["seconds_per_step"] > 0 for u in data["units"])
    assert {u["batch"] * 8 for u in data["units"]} == {u["stands_for_batch"]
                                                       for u in data["units"]}
    plan = subprocess.run([PYTHON, "-m", "ckd_lib.study", "--profile", str(profile), "--plan"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert plan.returncode == 0, plan.stderr
    assert f"CPU-h: hours of the CPU of a rehearsal, for {len(records)} of {len(records)}" \
        in plan.stdout, plan.stdout
    # a rehearsal's teacher never teaches a real run
    teacher = next(r for r in records if r["config"]["student"] == "resnet32x4")
    model = root / "runs" / teacher["run_id"] / "model_last.pth"
    refused = subprocess.run([PYTHON, "-m", "ckd_lib.train", "--recipe", "cifar100",
                              "resnet32x4", "resnet8x4", "KD", "--set",
                              f"teacher_checkpoint={model}"], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "rehearsal run" in refused.stderr, refused.stderr
    print(f"CI slice: {len(records)} runs in {data['jobs']} jobs, {minutes:.1f} min")


# -- through SLURM ------------------------------------------------------------------------------
SMALL = """\
description: a small profile rehearsed through SLURM (tests/test_rehearse.py)
extends: tiny
notebooks:
  10_teachers: {}
  20_same_arch: {}
  90_report: {}
"""
CPU_CLUSTER = ["--slurm", "gpus_per_task=0", "--slurm", "cpus_per_task=1", "--slurm",
               "time_min=10", "--slurm", "lock_wait_s=0"]


def job_states(job_ids: list[str]) -> dict[str, str]:
    bases = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--array", "--format=%i|%T",
                          f"--jobs={bases}"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.splitlines() if line)


def test_a_small_profile_rehearsed_through_slurm(cluster, tmp_path, monkeypatch):
    """--rehearse --executor slurm submits the rehearsal's whole job graph (the teacher first,
    the students after it, the notebooks-and-report job last), which completes: every record
    a rehearsal's, the report, and the step times written by the notebooks job."""
    from ckd_lib.study import slurm
    from ckd_lib.study.__main__ import main as study_main

    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    bench = tmp_path / "bench"
    monkeypatch.setenv("CKD_BENCHMARKS_DIR", str(bench))  # the jobs write there too
    results_dir = tmp_path / "results"
    code = study_main(["--profile", str(profile), "--rehearse", "--results-dir",
                       str(results_dir), "--executor", "slurm", *CPU_CLUSTER])
    assert code == 0
    root = results_dir / "rehearse-small"
    plan = planning.Plan.load(root / "slurm" / "plan.json")
    book = json.loads((root / "slurm" / "jobs.json").read_text())
    jobs = [entries[-1]["job_id"] for entries in book["units"].values()]
    notebooks = book["notebooks"][-1]["job_id"]
    assert len(jobs) == len(plan.units) == 4  # the teacher, three groups of students
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        states = job_states(jobs + [notebooks])
        if all(states.get(j) not in (None, *slurm.PENDING, *slurm.RUNNING)
               for j in jobs + [notebooks]):
            break
        time.sleep(2)
    assert set(job_states(jobs + [notebooks]).values()) == {"COMPLETED"}, \
        slurm.log_tail(root / "slurm" / "logs", notebooks)
    records = results.load_records(root / "runs")
    assert sorted(r["run_id"] for r in records) == sorted(i for u in plan.units
                                                          for i in u.run_ids)
    assert all(r["rehearsal"]["profile"] == "small" for r in records)
    assert "REHEARSAL" in (root / "report.html").read_text()
    data = json.loads((bench / "rehearse-small-cpu.json").read_text())
    assert data["runs"] == len(records) and all(u["complete"] == u["runs"]
                                                for u in data["units"])
