"""The training engine on the CPU: determinism, resume, several students, records, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ckd_lib import results
from ckd_lib.config import ConfigError, RunConfig
from ckd_lib.engine import train

DATA = "synthetic:num_classes=10,num_train=256,num_test=64"


def make_config(tmp_path, **overrides) -> RunConfig:
    base = dict(student="resnet8", method="CKD", dataset=DATA, teacher="resnet8",
                teacher_checkpoint="untrained", epochs=2, lr=0.05, schedule="cosine",
                batch_size=32, seed=0, device="cpu", out_dir=str(tmp_path / "runs"),
                progress=False, eval_batch_size=64)
    base.update(overrides)
    return RunConfig(**base)


def final_weights(record) -> dict:
    run_dir = Path(record["config"]["out_dir"]) / record["run_id"]
    return torch.load(run_dir / "model_last.pth", weights_only=False)["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_learns_and_writes_a_complete_record(tmp_path):
    # 512 test images: on 64, one image is 1.6 points, and the thread count and memory format
    # (float rounding) moved the third epoch's top-1 between 39 and 45
    cfg = make_config(tmp_path, method="CE", teacher=None, teacher_checkpoint=None, epochs=3,
                      lr=0.1, dataset="synthetic:num_classes=10,num_train=256,num_test=512")
    (record,) = train(cfg)
    assert record["status"] == "complete" and record["epochs_done"] == 3
    assert len(record["history"]) == 3
    # the synthetic classes are learnable: far above chance (10 %) after three epochs (about 42 %
    # measured at 1 and 2 threads), and the training set is mostly fitted
    assert record["last"]["top1"] > 30.0
    assert record["history"][-1]["train_top1"] > 60.0
    on_disk = results.read_record(results.record_path(cfg.out_dir, cfg.run_id()))
    assert on_disk["config_hash"] == cfg.config_hash()
    for key in ("commit", "dirty", "torch", "device_name", "cpu_threads"):
        assert key in on_disk["provenance"]
    assert on_disk["data"]["train_size"] == 256 and len(on_disk["data"]["train_fingerprint"]) == 64
    h = on_disk["history"][0]
    for key in ("lr", "loss_ce", "train_top1", "test_top1", "test_top5", "train_seconds"):
        assert key in h
    assert on_disk["best"]["top1"] == max(e["test_top1"] for e in on_disk["history"])


def test_seeded_runs_repeat_exactly(tmp_path):
    a = train(make_config(tmp_path / "a"))[0]
    b = train(make_config(tmp_path / "b"))[0]
    assert_same_weights(final_weights(a), final_weights(b))
    assert [h["loss_ckd"] for h in a["history"]] == [h["loss_ckd"] for h in b["history"]]
    c = train(make_config(tmp_path / "c", init_seed=5))[0]
    assert not torch.equal(final_weights(a)["fc.weight"], final_weights(c)["fc.weight"])


def test_finished_run_is_not_recomputed(tmp_path):
    cfg = make_config(tmp_path, epochs=1)
    first = train(cfg)[0]
    path = results.record_path(cfg.out_dir, cfg.run_id())
    stamp = path.stat().st_mtime_ns
    again = train(make_config(tmp_path, epochs=1))[0]
    assert path.stat().st_mtime_ns == stamp
    assert again["history"] == first["history"]
    changed = make_config(tmp_path, epochs=1, lr=0.02)
    assert changed.run_id() != cfg.run_id()


def test_several_students_equal_separate_runs(tmp_path):
    kd = dict(method="KD", loss={"temperature": 4.0})
    ckd = dict(method="CKD", loss={"cl_weight": 10.0}, init_seed=7)
    dkd = dict(method="DKD", loss={"beta": 8.0, "warmup_epochs": 2}, init_seed=3)
    group = train([make_config(tmp_path / "group", **kw) for kw in (kd, ckd, dkd)])
    for kw, together in zip((kd, ckd, dkd), group, strict=True):
        alone = train(make_config(tmp_path / f"alone-{kw['method']}", **kw))[0]
        assert_same_weights(final_weights(together), final_weights(alone))
        assert [h["test_top1"] for h in together["history"]] == [
            h["test_top1"] for h in alone["history"]]


def test_group_must_share_the_data_stream(tmp_path):
    with pytest.raises(ConfigError, match="must share batch_size"):
        train([make_config(tmp_path), make_config(tmp_path, method="KD", batch_size=16)])


def _write_yaml(path: Path, cfg: RunConfig) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_kill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    kw = dict(epochs=6, dataset="synthetic:num_classes=10,num_train=1024,num_test=64")
    reference = train(make_config(tmp_path / "straight", **kw))[0]

    cfg = make_config(tmp_path / "killed", **kw)
    config_file = _write_yaml(tmp_path / "run.yaml", cfg)
    record_file = results.record_path(cfg.out_dir, cfg.run_id())
    command = [sys.executable, "-m", "ckd_lib.train", "--config", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if record_file.is_file() and json.loads(record_file.read_text())["epochs_done"] >= 2:
            time.sleep(0.15)  # well inside the third epoch
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads(record_file.read_text())
    assert partial["status"] == "running" and partial["epochs_done"] < 6

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    final = results.read_record(record_file)
    assert final["status"] == "complete"
    assert_same_weights(final_weights(final), final_weights(reference))
    assert [h["loss_ckd"] for h in final["history"]] == [
        h["loss_ckd"] for h in reference["history"]]


def test_learnable_temperature_and_variants_train(tmp_path):
    cfg = make_config(tmp_path, epochs=1, loss={"learnable_temperature": True,
                                                "symmetric": True, "chunk_size": 8})
    (record,) = train(cfg)
    assert "tau" in record["history"][0] and record["history"][0]["tau"] > 0


def test_teacher_checkpoint_from_a_teacher_run(tmp_path):
    teacher_cfg = make_config(tmp_path, method="CE", teacher=None, teacher_checkpoint=None,
                              student="resnet20", epochs=2, lr=0.1)
    teacher_record = train(teacher_cfg)[0]
    checkpoint = Path(teacher_cfg.out_dir) / teacher_cfg.run_id() / "model_last.pth"
    student = train(make_config(tmp_path, teacher="resnet20", teacher_checkpoint=str(checkpoint),
                                method="KD", loss={}, epochs=1))[0]
    assert student["teacher"]["test_top1"] == pytest.approx(teacher_record["last"]["top1"])
    assert student["teacher"]["stored_accuracy"] == pytest.approx(teacher_record["last"]["top1"])


@pytest.mark.parametrize("overrides, message", [
    ({"method": "FitNet"}, "method='FitNet' is not accepted"),
    ({"lr": -0.1}, "lr=-0.1 must be positive"),
    ({"student": "resnet9"}, "student='resnet9' is not accepted"),
    ({"teacher_checkpoint": None}, "has no checkpoint"),
    ({"teacher_checkpoint": "/nonexistent/ckpt.pth"}, "no such file"),
    ({"loss": {"alpha": 1.0}}, r"loss parameter\(s\) \['alpha'\] do not apply to method CKD"),
    ({"loss": {"negatives": "both"}}, "loss.negatives='both' is not accepted"),
    ({"schedule": "linear"}, "schedule='linear' is not accepted"),
    ({"schedule": "step", "milestones": [300]}, "milestones"),
    ({"dataset": "imagenet21k"}, "dataset='imagenet21k' is not accepted"),
    ({"method": "CE"}, "method CE trains without a teacher"),
    ({"epochs": 0}, "epochs=0 must be a positive integer"),
    ({"amp": "bf16"}, None),
])
def test_bad_input_is_refused_before_training(tmp_path, overrides, message):
    cfg = make_config(tmp_path, **overrides)
    if message is None:  # bf16 is refused on the CPU when the device is resolved
        with pytest.raises(ConfigError, match="bf16"):
            train(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_batch_larger_than_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="batch_size=512 is larger than the training set"):
        train(make_config(tmp_path, batch_size=512))
    assert not list((tmp_path / "runs").glob("*/record.json"))


def test_unknown_config_field_lists_accepted():
    with pytest.raises(ConfigError, match="unknown config field"):
        RunConfig.from_dict({"student": "resnet8", "epoch": 3})


def test_cli_print_config_and_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--recipe", "cifar100",
                          "resnet32x4", "resnet8x4", "CKD", "--set", "teacher_checkpoint=untrained",
                          "--set", "loss.cl_weight=50", "--print-config"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (printed,) = yaml.safe_load(out.stdout)
    assert printed["epochs"] == 480 and printed["loss"]["cl_weight"] == 50
    bad = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--recipe", "cifar100",
                          "resnet32x4", "resnet8x4", "CKD", "--set", "lr=-1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "lr=-1 must be positive" in bad.stderr
    helped = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--recipe" in helped.stdout


def test_benchmark_runs_on_cpu_and_prints_figures(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "ckd_lib.bench", "--device", "cpu",
                           "--train-size", "128", "--test-size", "64", "--epochs", "2",
                           "--json", str(out_json)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "3 students sharing the teacher" in proc.stdout
    figures = json.loads(out_json.read_text())
    ref = figures["rows"]["reference (DataLoader, fp32, eager)"]
    assert ref["train_s_per_epoch"] > 0 and ref["images_per_s"] > 0
    assert figures["three_students_ratio"] > 1.0


def test_teacher_stays_frozen_in_eval_mode(tmp_path):
    teacher_cfg = make_config(tmp_path, method="CE", teacher=None, teacher_checkpoint=None,
                              epochs=1, lr=0.1)
    train(teacher_cfg)
    checkpoint = Path(teacher_cfg.out_dir) / teacher_cfg.run_id() / "model_last.pth"
    before = torch.load(checkpoint, weights_only=False)["model"]
    from ckd_lib.engine.trainer import GroupTrainer

    trainer = GroupTrainer([make_config(tmp_path, teacher_checkpoint=str(checkpoint),
                                        method="KD", loss={}, epochs=2).validate()])
    trainer.run()
    assert not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    after = trainer.teacher.state_dict()
    for key, value in before.items():  # weights and BatchNorm running statistics unchanged
        assert torch.equal(value, after[key].cpu()), key
