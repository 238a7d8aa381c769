"""The detection CLI under torchrun on the CPU (gloo): one record, equal ranks, skip, no reuse.

Two processes, one image each (images_per_batch=2), ReviewKD+CKD with an untrained R18 teacher
on the generated shapes set. The run is launched exactly as a user launches it
(``torchrun ... -m ckd_lib.detection.train --config run.yaml``) through a small wrapper that
only watches: it records the ``DetectionDistiller`` each rank builds and, after the CLI returns,
saves that rank's final weights, so the test can compare the two ranks (the engine has no hook
for this and does not need one).
"""

import math
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from ckd_lib import results
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.evaluate import METRIC_NAMES
from ckd_lib.detection.models import load_detector
from ckd_lib.detection.shapes import make_shapes_dataset

# Runs ``python -m ckd_lib.detection.train`` (runpy, as -m does) with the engine's distiller
# class replaced by a subclass that remembers its instances; then saves this rank's weights.
WATCHED_CLI = """\
import os
import runpy
import sys

import torch

from ckd_lib.detection import engine

dump_dir = sys.argv.pop(1)
made = []


class Watched(engine.DetectionDistiller):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        made.append(self)
        self.initial = {k: v.detach().clone() for k, v in self.named_parameters()}


engine.DetectionDistiller = Watched
try:
    runpy.run_module("ckd_lib.detection.train", run_name="__main__", alter_sys=True)
finally:
    if made:
        distiller = made[-1]
        torch.save({"parameters": {k: v.detach().clone()
                                   for k, v in distiller.named_parameters()},
                    "initial": distiller.initial,
                    "student": distiller.student.state_dict()},
                   os.path.join(dump_dir, f"rank{os.environ['RANK']}.pt"))
"""

# Runs the engine for a few iterations of a config and leaves (stop_after), as tests do.
PARTIAL_RUN = """\
import sys

import yaml

from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.engine import train_detection

with open(sys.argv[1]) as handle:
    config = DetectionConfig.from_dict(yaml.safe_load(handle))
record = train_detection(config, stop_after=int(sys.argv[2]))
print(f"{record['run_id']}: {record['status']} at {record['iterations_done']}")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args, timeout=600) -> subprocess.CompletedProcess:
    """Two gloo processes on the CPU, one thread each; the whole group is killed on a hang."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def tiny_config(data_root, out_dir, iterations=2) -> DetectionConfig:
    return DetectionConfig(
        data_root=str(data_root), student="resnet18", student_weights=None,
        method="ReviewKD+CKD", teacher="resnet18", teacher_checkpoint="untrained",
        iterations=iterations, milestones=(iterations - 1,), lr=0.01, warmup_iterations=2,
        images_per_batch=2, train_min_sizes=(96, 128), test_min_size=128, max_size=160,
        device="cpu", amp="off", workers=0, checkpoint_every=2, log_every=1,
        out_dir=str(out_dir), val_limit=2)


def write_config(config: DetectionConfig, path):
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def files_state(*paths):
    """(mtime_ns, bytes) of each file: unchanged means not rewritten."""
    return [(p.stat().st_mtime_ns, p.read_bytes()) for p in paths]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One finished 2-process run of the CLI (2 iterations), with each rank's final weights."""
    tmp = tmp_path_factory.mktemp("detection_ddp")
    data_root = make_shapes_dataset(tmp / "shapes", num_train=8, num_val=4, seed=0)
    config = tiny_config(data_root, tmp / "runs")
    config_file = write_config(config, tmp / "run.yaml")
    wrapper = tmp / "watched_cli.py"
    wrapper.write_text(WATCHED_CLI)
    dumps = tmp / "dumps"
    dumps.mkdir()
    proc = torchrun(wrapper, dumps, "--config", config_file)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out_dir = tmp / "runs"
    return {"tmp": tmp, "config": config, "config_file": config_file, "proc": proc,
            "out_dir": out_dir, "records": sorted(out_dir.glob("*/record.json")),
            "ranks": [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1)]}


@pytest.mark.slow
def test_ddp_cli_writes_one_complete_record_and_a_loadable_model(ddp_run):
    config = ddp_run["config"]
    run_dir = ddp_run["out_dir"] / config.run_id()
    assert ddp_run["records"] == [run_dir / "record.json"]
    record = results.read_record(run_dir / "record.json")
    assert record["status"] == "complete"
    assert record["config_hash"] == config.config_hash()
    assert record["iterations_done"] == 2
    assert record["distributed"] == {"world_size": 2, "backend": "gloo", "images_per_batch": 2,
                                     "per_device_images": 1}
    # both ranks' validation shards were gathered and scored once
    assert record["history"][-1]["images"] == 2
    assert [e["iteration"] for e in record["train_log"]] == [1, 2]
    for entry in record["train_log"]:
        assert math.isfinite(entry["loss"])
        assert {"loss_ckd", "loss_reviewkd", "loss_classifier"} <= set(entry)
    for metric in METRIC_NAMES:  # an untrained detector may have no AP for a size: NaN
        value = record["last"][metric]
        assert isinstance(value, float) and (math.isfinite(value) or math.isnan(value)), (
            metric, value)
        assert math.isnan(value) or 0.0 <= value <= 100.0
    assert isinstance(record["teacher"]["metrics"]["bbox"]["AP"], float)
    # what the CLI printed: one summary (rank 0's), not one per rank
    assert ddp_run["proc"].stdout.count(f"{config.run_id()}: complete, box AP") == 1

    model = load_detector(run_dir / "model_last.pth")
    assert model.spec.backbone == "resnet18" and model.spec.num_classes == 4
    saved = torch.load(run_dir / "model_last.pth", weights_only=True)["model"]
    rank0 = ddp_run["ranks"][0]["student"]
    assert saved.keys() == rank0.keys()
    for key in saved:  # the file holds the student the run ended with
        assert torch.equal(saved[key], rank0[key]), key
    # the resume checkpoint is removed once the complete record and model are written
    assert not (ddp_run["out_dir"] / "_checkpoints" / f"{config.run_id()}.pt").exists()


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_trained_weights(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    # connectors trained too (the method's terms live under parts.<term>)
    assert any(k.startswith("parts.reviewkd.") for k in rank0["parameters"])
    for key, value in rank0["parameters"].items():
        assert torch.equal(value, rank1["parameters"][key]), key
    # BatchNorm running statistics (the scratch student's backbone, ReviewKD's connectors) are
    # each rank's own after its last forward: DDP broadcasts rank 0's before every forward and
    # rank 0's are saved. Every other student buffer must agree.
    running = ("running_mean", "running_var", "num_batches_tracked")
    compared = [k for k in rank0["student"] if not k.endswith(running)]
    assert any(k.endswith("running_mean") for k in rank0["student"])  # scratch backbone: BN
    for key in compared:
        assert torch.equal(rank0["student"][key], rank1["student"][key]), key
    differing = [k for k in rank0["student"] if k.endswith("running_mean")
                 and not torch.equal(rank0["student"][k], rank1["student"][k])]
    assert differing  # each rank did update its own statistics in the last step
    changed = [k for k, v in rank0["parameters"].items()
               if not torch.equal(v, rank0["initial"][k])]
    assert any(k.startswith("student.roi_heads.") for k in changed)
    assert any(k.startswith("student.backbone.") for k in changed)
    assert any(k.startswith("parts.reviewkd.") for k in changed)


@pytest.mark.slow
def test_ddp_finished_run_is_skipped_and_another_config_does_not_reuse_it(ddp_run):
    config, out_dir = ddp_run["config"], ddp_run["out_dir"]
    run_dir = out_dir / config.run_id()
    checkpoint = out_dir / "_checkpoints" / f"{config.run_id()}.pt"
    outputs = [run_dir / "record.json", run_dir / "model_last.pth"]
    before = files_state(*outputs)

    again = torchrun("-m", "ckd_lib.detection.train", "--config", ddp_run["config_file"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"{config.run_id()}: complete, box AP" in again.stdout
    assert "iteration 1/" not in again.stdout and "resumed" not in again.stdout
    assert files_state(*outputs) == before and not checkpoint.exists()

    # The same run at 4 iterations is another run: its own id, checkpoint and record; it starts
    # from iteration 0 (one iteration, then it leaves) instead of resuming the 2-iteration one.
    longer = tiny_config(config.data_root, out_dir, iterations=4)
    assert longer.run_id() != config.run_id()
    script = ddp_run["tmp"] / "partial_run.py"
    script.write_text(PARTIAL_RUN)
    partial = torchrun(script, write_config(longer, ddp_run["tmp"] / "longer.yaml"), 1)
    assert partial.returncode == 0, partial.stderr[-4000:]
    assert "resumed" not in partial.stdout
    assert f"{longer.run_id()}: running at 1" in partial.stdout
    record = results.read_record(out_dir / longer.run_id() / "record.json")
    assert record["status"] == "running" and record["iterations_done"] == 1
    assert [e["iteration"] for e in record["train_log"]] == [1]
    saved = torch.load(out_dir / "_checkpoints" / f"{longer.run_id()}.pt", map_location="cpu",
                       weights_only=False)
    assert saved["iteration"] == 1 and saved["config_hash"] == longer.config_hash()
    assert files_state(*outputs) == before
    assert results.read_record(run_dir / "record.json")["status"] == "complete"
