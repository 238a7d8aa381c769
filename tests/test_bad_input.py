"""Bad input through the real entry points: one clear line, the right exit status, nothing unsafe.

Every case runs a command line as a user would (a subprocess) and checks: the exit status; one
``error:`` line that names the bad value and what is accepted; no Python traceback; and, at the
end of the module, that no file of a finished run changed. Hostile pickles are planted wherever
the project reads a file it did not write in the same process; their payload (creating a file)
must never run. The engine behaviours a user meets (a divergence, a deleted model, an edited
record, a second process, a stale lock, a stop signal) are exercised the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = "synthetic:num_classes=5,num_train=64,num_test=32"
RECIPE = ["--recipe", "cifar100", "resnet32x4", "resnet8x4", "CKD",
          "--set", "teacher_checkpoint=untrained"]


def run(module: str, *args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CKD_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO, env=full_env)


def refused(proc, *fragments, code=2) -> str:
    """The one error line of a refused command, checked; returned for further checks."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def tiny_config(tmp_path: Path, name="run.yaml", **changes) -> Path:
    config = dict(student="resnet8", method="CKD", dataset=SYNTHETIC, teacher="resnet8",
                  teacher_checkpoint="untrained", epochs=1, lr=0.05, schedule="cosine",
                  batch_size=16, device="cpu", out_dir=str(tmp_path / "runs"), progress=False)
    config.update(changes)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Payload:
    """Unpickling it creates ``path``: proof that a loader ran code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run whose files no refused command may touch."""
    folder = tmp_path_factory.mktemp("finished")
    proc = run("ckd_lib.train", "--config", tiny_config(folder))
    assert proc.returncode == 0, proc.stderr
    return folder / "runs", snapshot(folder / "runs")


# -- the training command line ---------------------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["--set", "lr=abc"], ["lr='abc'", "a number"]),
    (["--set", "lr=-1e-3"], ["lr=-0.001 must be positive"]),
    (["--set", "weight_decay=none"], ["weight_decay='none'", "a number"]),
    (["--set", "milestones=abc"], ["milestones='abc'", "a list of epochs"]),
    (["--set", "device=5"], ["device=5", "'cuda:N'"]),
    (["--set", "epochs=0"], ["epochs=0", "positive integer"]),
    (["--set", "seed=-1"], ["seed=-1", ">= 0"]),
    (["--set", "epoch=3"], ["unknown config field(s) ['epoch']", "accepted"]),
    (["--set", "foo"], ["--set expects KEY=VALUE", "'foo'"]),
    (["--set", "loss.gamma=2"], ["['gamma']", "method CKD", "accepted"]),
    (["--set", "loss.temperature=-1"], ["loss.temperature=-1", "> 0"]),
    (["--set", "loss.negatives=both"], ["loss.negatives='both'", "['teacher', 'student']"]),
    (["--set", "loss.chunk_size=1"], ["loss.chunk_size=1", ">= 2"]),
    (["--set", "loss.symmetric=maybe"], ["loss.symmetric='maybe'", "true or false"]),
    (["--set", "train_subset=100000000"], ["train_subset=100000000", "50000 images"]),
    (["--set", "train_subset=100", "--set", "batch_size=512"],
     ["batch_size=512 is larger than the training set (100 images)"]),
    (["--set", "student=resnet9"], ["student='resnet9'", "resnet8x4"]),
    (["--set", "method=FOO"], ["method='FOO'", "CE, KD, DKD, CKD"]),
    (["--set", "dataset=cifar99"], ["dataset='cifar99'", "fashion_mnist"]),
    (["--set", "dataset=synthetic:size=3"], ["synthetic:size=3", "num_train"]),
    (["--set", "teacher_checkpoint=/nonexistent/ckpt.pth"], ["/nonexistent/ckpt.pth",
                                                             "no such file"]),
])
def test_bad_values_are_refused_naming_value_and_accepted_form(args, fragments, finished):
    refused(run("ckd_lib.train", *RECIPE, *args, "--set", f"out_dir={finished[0]}",
                "--print-config"), *fragments)


@pytest.mark.parametrize("recipe, fragments", [
    (["cifar99", "resnet32x4", "resnet8x4", "CKD"], ["'cifar99'", "cifar100"]),
    (["cifar100", "resnet56", "resnet8x4", "CKD"], ["resnet56->resnet8x4",
                                                    "resnet32x4->resnet8x4:CKD"]),
    (["cifar100", "resnet32x4", "resnet8x4", "NOPE"], ["'NOPE'", "resnet32x4->resnet8x4:DKD"]),
])
def test_unknown_recipe_cells_list_the_known_ones(recipe, fragments):
    refused(run("ckd_lib.train", "--recipe", *recipe, "--print-config"), *fragments)


def test_numbers_in_scientific_notation_and_cell_fields_are_accepted():
    proc = run("ckd_lib.train", *RECIPE, "--set", "lr=1e-3", "--set", "weight_decay=5E-4",
               "--set", "dataset=fashion_mnist", "--set", "loss.cl_weight=1e2", "--print-config")
    assert proc.returncode == 0, proc.stderr
    (config,) = yaml.safe_load(proc.stdout)
    assert config["lr"] == 0.001 and config["weight_decay"] == 0.0005
    assert config["dataset"] == "fashion_mnist" and config["loss"]["cl_weight"] == 100.0


def test_config_files_that_are_missing_empty_malformed_or_not_configs(tmp_path):
    refused(run("ckd_lib.train", "--config", tmp_path / "none.yaml"), "none.yaml", "not found")
    (tmp_path / "empty.yaml").write_text("")
    refused(run("ckd_lib.train", "--config", tmp_path / "empty.yaml"), "empty.yaml", "is empty")
    (tmp_path / "broken.yaml").write_text("student: resnet8\nloss: {cl_weight: [1,\n")
    refused(run("ckd_lib.train", "--config", tmp_path / "broken.yaml"), "broken.yaml",
            "not valid YAML")
    (tmp_path / "list.yaml").write_text("- {student: resnet8, method: CE}\n- just a string\n")
    refused(run("ckd_lib.train", "--config", tmp_path / "list.yaml"), "item 2",
            "expected a mapping")


def test_an_out_dir_that_cannot_hold_records_is_refused_before_any_data(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = refused(run("ckd_lib.train", "--config", tiny_config(tmp_path),
                       "--set", f"out_dir={blocker / 'runs'}"), "out_dir=", "cannot hold")
    assert "a_file" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_first(tmp_path):
    refused(run("ckd_lib.train", "--config", tiny_config(tmp_path), "--set", "device=cuda"),
            "device='cuda'", "CUDA is not available")
    assert not (tmp_path / "runs").exists()


def test_a_data_root_that_does_not_exist_is_not_created(tmp_path):
    nowhere = tmp_path / "nowhere"
    refused(run("ckd_lib.train", *RECIPE, "--set", f"data_root={nowhere}",
                "--set", f"out_dir={tmp_path / 'runs'}"), "CIFAR-100", str(nowhere))
    assert not nowhere.exists()


def test_a_truncated_fashion_mnist_file_is_named(tmp_path):
    system = Path("/usr/share/datasets/fashion-mnist")
    if not system.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = tmp_path / "fmnist"
    shutil.copytree(system, data)
    damaged = data / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:50_000])
    line = refused(run("ckd_lib.train", "--config", tiny_config(
        tmp_path, dataset="fashion_mnist", train_subset=64, test_subset=32, data_root=str(data))),
        "train-images-idx3-ubyte.gz", "truncated or corrupt")
    assert not list((tmp_path / "runs").glob("*/record.json")), line


def test_fashion_mnist_from_the_system_copy_is_said_and_recorded(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    proc = run("ckd_lib.train", "--config", tiny_config(
        tmp_path, dataset="fashion_mnist", train_subset=64, test_subset=32,
        data_root=str(tmp_path / "empty")))
    assert proc.returncode == 0, proc.stderr
    assert "system copy /usr/share/datasets/fashion-mnist" in proc.stdout
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/record.json")]
    assert "system copy" in record["data"]["source"]


@pytest.mark.parametrize("content, fragments", [
    (b"this is a text file, not a checkpoint\n", ["not a PyTorch checkpoint"]),
    ("truncated", ["truncated or damaged"]),
])
def test_a_teacher_checkpoint_that_is_not_one_is_named(tmp_path, content, fragments):
    path = tmp_path / "teacher.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    refused(run("ckd_lib.train", "--config", tiny_config(tmp_path, teacher_checkpoint=str(path))),
            str(path), *fragments)


# -- plugins --------------------------------------------------------------------------------------
def test_plugins_that_are_missing_broken_or_clash(tmp_path):
    refused(run("ckd_lib.train", "--plugin", tmp_path / "missing.py", "--list-methods"),
            "missing.py", "no such file")
    (tmp_path / "broken.py").write_text("def oops(:\n")
    refused(run("ckd_lib.train", "--plugin", tmp_path / "broken.py", "--list-methods"),
            "broken.py", "SyntaxError", "line 1")
    (tmp_path / "clash.py").write_text(
        "from ckd_lib.methods import register_term\n"
        "register_term('ckd', compute=lambda inputs, p: 0.0)\n")
    refused(run("ckd_lib.train", "--plugin", tmp_path / "clash.py", "--list-methods"),
            "clash.py", "term 'ckd' is already registered by ckd_lib")
    refused(run("ckd_lib.train", "--plugin", "no_such_module_anywhere", "--list-methods"),
            "no_such_module_anywhere", "no such file or module")


# -- the detection command line and COCO files ---------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from ckd_lib.detection.shapes import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=2, seed=0)


def detection_config(tmp_path: Path, root: Path, **changes) -> Path:
    config = dict(data_root=str(root), student="resnet18", student_weights=None, iterations=2,
                  milestones=[1], warmup_iterations=1, images_per_batch=2,
                  train_min_sizes=[64], test_min_size=64, max_size=96, roi_batch_per_image=32,
                  device="cpu", amp="off", workers=0, log_every=1,
                  out_dir=str(tmp_path / "det"))
    config.update(changes)
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("args, fragments", [
    (["--set", "lr=abc"], ["lr='abc'", "a number"]),
    (["--set", "amp=fp8"], ["amp='fp8'", "['bf16', 'off']"]),
    (["--set", "milestones=abc"], ["milestones='abc'", "a list of iterations"]),
    (["--set", "iterations=1000"], ["--iterations"]),
    (["--set", "loss.ckd_weight=-1"], ["loss.ckd_weight=-1", ">= 0"]),
    (["--set", "loss.cl_weight=1"], ["['cl_weight']", "ckd_weight"]),
    (["--set", "device=gpu0"], ["device='gpu0'", "'cuda:N'"]),
])
def test_bad_detection_values(args, fragments):
    refused(run("ckd_lib.detection.train", "--recipe", "R101", "R18", "ReviewKD+CKD",
                "--set", "teacher_checkpoint=untrained", *args, "--print-config"), *fragments)


def test_detection_accepts_scientific_notation():
    proc = run("ckd_lib.detection.train", "--recipe", "R101", "R18", "DKD", "--set", "lr=1e-3",
               "--set", "teacher_checkpoint=untrained", "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["lr"] == 0.001


@pytest.mark.parametrize("damage, fragments", [
    ("truncate", ["instances_train2017.json", "not valid JSON"]),
    ("no_bbox", ["instances_train2017.json", "bbox=None", "[x, y, width, height]"]),
    ("bad_category", ["instances_train2017.json", "category_id=101", "categories"]),
])
def test_damaged_coco_annotations_are_named(tmp_path, shapes, damage, fragments):
    root = tmp_path / "coco"
    shutil.copytree(shapes, root)
    path = root / "annotations" / "instances_train2017.json"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        data = json.loads(path.read_text())
        if damage == "no_bbox":
            del data["annotations"][0]["bbox"]
        else:
            data["annotations"][0]["category_id"] = 101
        path.write_text(json.dumps(data))
    refused(run("ckd_lib.detection.train", "--config", detection_config(tmp_path, root)),
            *fragments)


def test_a_truncated_coco_image_is_named(tmp_path, shapes):
    root = tmp_path / "coco"
    shutil.copytree(shapes, root)
    images = sorted((root / "train2017").iterdir())
    for image in images:
        image.write_bytes(image.read_bytes()[:100])
    refused(run("ckd_lib.detection.train", "--config", detection_config(tmp_path, root)),
            "train2017", "cannot be decoded")


# -- the study runner ---------------------------------------------------------------------------
def test_study_runner_refusals(tmp_path):
    refused(run("ckd_lib.study", "--profile", "nope", "--check"), "'nope'", "demo")
    (tmp_path / "broken.yaml").write_text("notebooks:\n  00_environment: {\n")
    refused(run("ckd_lib.study", "--profile", tmp_path / "broken.yaml", "--check"),
            "broken.yaml", "not valid YAML")
    (tmp_path / "typo.yaml").write_text("notebooks:\n  20_same_arch: {sedes: [0]}\n")
    refused(run("ckd_lib.study", "--profile", tmp_path / "typo.yaml", "--check"),
            "20_same_arch", "'sedes'")
    refused(run("ckd_lib.study", "--profile", "tiny", "--only", "99", "--check"), "'99'",
            "00_environment")
    refused(run("ckd_lib.study", "--profile", "tiny", "--devices", "x,y", "--check"),
            "'x'", "GPU indices")
    (tmp_path / "plugins.yaml").write_text("plugins: nope.py\nnotebooks:\n  00_environment: {}\n")
    refused(run("ckd_lib.study", "--profile", tmp_path / "plugins.yaml", "--check"),
            "'plugins'", "list")


def test_an_unknown_executor_is_refused_naming_the_accepted_ones():
    refused(run("ckd_lib.study", "--profile", "tiny", "--executor", "pbs"), "'pbs'",
            "local, slurm")  # the slurm: options: tests/test_slurm.py


# -- hostile pickles: nothing the project loads from disk runs code -------------------------------
def test_a_hostile_resume_checkpoint_is_refused_without_running_it(tmp_path):
    config_file = tiny_config(tmp_path, epochs=2)
    from ckd_lib.config import RunConfig

    (config,) = RunConfig.from_yaml(config_file)
    planted = tmp_path / "runs" / "_checkpoints" / f"{config.run_id()}.pt"
    planted.parent.mkdir(parents=True)
    witness = tmp_path / "pwned"
    torch.save({"format": 2, "epoch": 1, "batch": 0, "x": Payload(witness)}, planted)
    refused(run("ckd_lib.train", "--config", config_file), str(planted), "Python objects")
    assert not witness.exists()


def test_a_hostile_teacher_checkpoint_is_refused_without_running_it(tmp_path):
    witness = tmp_path / "pwned"
    path = tmp_path / "teacher.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": Payload(witness)}, path)
    refused(run("ckd_lib.train", "--config", tiny_config(tmp_path, teacher_checkpoint=str(path))),
            str(path), "Python objects")
    assert not witness.exists()


def test_a_hostile_cifar_file_is_refused_without_running_it(tmp_path):
    witness = tmp_path / "pwned"
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps({"data": Payload(witness)}))
    refused(run("ckd_lib.train", *RECIPE, "--set", f"data_root={tmp_path / 'data'}",
                "--set", f"out_dir={tmp_path / 'runs'}"), "cifar-100-python", "builtins")
    assert not witness.exists()


def test_hostile_detection_checkpoints_are_refused_without_running_them(tmp_path, shapes):
    from ckd_lib.detection.config import DetectionConfig

    witness = tmp_path / "pwned"
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": {}, "spec": Payload(witness)}, teacher)
    refused(run("ckd_lib.detection.train", "--config", detection_config(
        tmp_path, shapes, teacher="resnet18", method="CKD", teacher_checkpoint=str(teacher))),
        str(teacher))
    assert not witness.exists()
    config_file = detection_config(tmp_path, shapes)
    config = DetectionConfig.from_dict(yaml.safe_load(config_file.read_text()))
    planted = tmp_path / "det" / "_checkpoints" / f"{config.run_id()}.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"iteration": 1, "distiller": Payload(witness)}, planted)
    refused(run("ckd_lib.detection.train", "--config", config_file), str(planted),
            "Python objects")
    assert not witness.exists()


def test_no_torch_load_without_weights_only_in_the_package():
    """Every torch.load in ckd_lib passes weights_only=True (a literal, never a variable)."""
    offenders = []
    for path in (REPO / "ckd_lib").rglob("*.py"):
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
            if "pickle.load(" in line or "pickle.loads(" in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


# -- what the engine refuses to trust ------------------------------------------------------------
def test_a_divergence_stops_the_run_and_is_recorded(tmp_path):
    config_file = tiny_config(tmp_path, lr=1e6, method="KD", loss={})
    line = refused(run("ckd_lib.train", "--config", config_file), "diverged at epoch 1",
                   "loss term", "lr 1000000.0", code=3)
    (record_file,) = (tmp_path / "runs").glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "diverged" and record["run_id"] in line
    assert not (record_file.parent / "model_last.pth").exists()
    again = run("ckd_lib.train", "--config", config_file)
    refused(again, "diverged at epoch 1", code=3)
    assert "epoch 1/1" not in again.stdout  # not trained again


def test_a_missing_or_changed_model_makes_the_run_train_again(tmp_path):
    config_file = tiny_config(tmp_path)
    assert run("ckd_lib.train", "--config", config_file).returncode == 0
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/record.json")]
    (run_dir / "model_last.pth").unlink()
    proc = run("ckd_lib.train", "--config", config_file)
    assert proc.returncode == 0, proc.stderr
    assert "model file" in proc.stdout and "is missing" in proc.stdout
    assert (run_dir / "model_last.pth").is_file()
    assert list(run_dir.glob("record.rejected-*.json"))
    record = json.loads((run_dir / "record.json").read_text())
    record["best"]["top1"], record["history"] = 99.9, []
    (run_dir / "record.json").write_text(json.dumps(record))
    proc = run("ckd_lib.train", "--config", config_file)
    assert proc.returncode == 0 and "history is empty" in proc.stdout, proc.stdout
    assert json.loads((run_dir / "record.json").read_text())["best"]["top1"] < 99.9


def write_lock(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"}))


def test_a_run_held_by_a_live_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    from ckd_lib.config import RunConfig

    config_file = tiny_config(tmp_path)
    (config,) = RunConfig.from_yaml(config_file)
    lock = tmp_path / "runs" / "_locks" / f"{config.run_id()}.lock"
    write_lock(lock, os.getpid())
    refused(run("ckd_lib.train", "--config", config_file), config.run_id(),
            f"process {os.getpid()}", code=75)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(lock, gone.pid)
    proc = run("ckd_lib.train", "--config", config_file)
    assert proc.returncode == 0, proc.stderr
    assert not lock.exists()


def test_two_identical_commands_train_the_run_once(tmp_path):
    config_file = tiny_config(tmp_path, epochs=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "ckd_lib.train", "--config", str(config_file)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=REPO)
    locks = tmp_path / "runs" / "_locks"
    deadline = time.monotonic() + 120
    while not list(locks.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.2)
    second = run("ckd_lib.train", "--config", config_file)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    if second.returncode != 0:  # the first was still training: refused, naming it
        refused(second, f"process {first.pid}", code=75)
    else:  # the first had finished: skipped from its record, not trained again
        assert "epoch 1/6" not in second.stdout


def test_a_stop_signal_checkpoints_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path):
    from ckd_lib.config import RunConfig

    straight = tiny_config(tmp_path / "a", epochs=3)
    assert run("ckd_lib.train", "--config", straight).returncode == 0
    stopped = tiny_config(tmp_path / "b", epochs=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ckd_lib.train", "--config", str(stopped)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    for line in proc.stdout:  # stop once the first epoch is done: somewhere inside the second
        if "epoch 1/3" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 124, err
    assert "received SIGTERM" in err and "the same command resumes" in err
    assert run("ckd_lib.train", "--config", stopped).returncode == 0
    weights = []
    for config_file in (straight, stopped):
        (config,) = RunConfig.from_yaml(config_file)
        state = torch.load(Path(config.out_dir) / config.run_id() / "model_last.pth",
                           weights_only=True)["model"]
        weights.append(state)
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_subsets_are_the_same_images_for_every_seed(tmp_path):
    from ckd_lib.config import RunConfig
    from ckd_lib.engine import train

    configs = [RunConfig.from_dict(yaml.safe_load(tiny_config(
        tmp_path, name=f"s{seed}.yaml", seed=seed, train_subset=40, test_subset=20).read_text()))
        for seed in (0, 1)]
    records = [train(c)[0] for c in configs]
    assert records[0]["data"]["train_fingerprint"] == records[1]["data"]["train_fingerprint"]
    assert records[0]["data"]["test_fingerprint"] == records[1]["data"]["test_fingerprint"]
    assert records[0]["data"]["subset_seed"] == 0
    other = RunConfig.from_dict({**configs[0].to_dict(), "data_seed": 1})
    assert other.run_id() != configs[0].run_id()  # another subset is another run


def test_the_finished_run_was_never_touched(finished):
    folder, before = finished
    assert snapshot(folder) == before


def test_gzip_fixture_sanity():
    """The truncation used above really makes gzip fail (guards the test's own premise)."""
    data = gzip.compress(bytes(range(256)) * 1000)
    with pytest.raises(EOFError):
        gzip.decompress(data[: len(data) // 2])
