"""The engine under torch.distributed on the CPU (gloo): DDP equals one process, resume works."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from ckd_lib import results
from ckd_lib.config import RunConfig
from ckd_lib.engine.objective import Objective, StudentStep
from ckd_lib.methods import TermContext, get_method

DATA = "synthetic:num_classes=10,num_train=512,num_test=64"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Linear(nn.Module):
    """A BatchNorm-free student: its gradients on a batch do not depend on how it is split."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 5).double()

    def forward(self, x):
        return self.fc(x)


def kd_objective() -> Objective:
    method = get_method("KD")
    return Objective(method, method.resolve({"ce_weight": 0.1, "kd_weight": 0.9,
                                             "temperature": 4.0}), TermContext("classification"))


def _kd_worker(rank, world, port, x, y, t, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    step = StudentStep(Linear(), kd_objective())
    ddp = nn.parallel.DistributedDataParallel(step)
    b = x.shape[0] // world
    part = slice(rank * b, (rank + 1) * b)
    _, terms = ddp(x[part], y[part], t[part], None, torch.ones((), dtype=torch.float64))
    loss = sum(terms.values())
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        queue.put((total.item() / world, step.model.fc.weight.grad.tolist(),
                   step.model.fc.bias.grad.tolist()))
    dist.destroy_process_group()


def test_ddp_kd_equals_one_process_on_the_whole_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 12, generator=g, dtype=torch.float64)
    t = torch.randn(8, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (8,), generator=g)
    single = StudentStep(Linear(), kd_objective())
    _, terms = single(x, y, t, None, torch.ones((), dtype=torch.float64))
    loss = sum(terms.values())
    loss.backward()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_kd_worker, args=(2, free_port(), x, y, t, queue), nprocs=2, join=True)
    ddp_loss, grad_w, grad_b = queue.get()
    grad_w, grad_b = torch.tensor(grad_w, dtype=torch.float64), torch.tensor(grad_b,
                                                                             dtype=torch.float64)
    assert ddp_loss == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(grad_w, single.model.fc.weight.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_b, single.model.fc.bias.grad, rtol=1e-12, atol=1e-14)


def torchrun(config_file, **popen):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "ckd_lib.train", "--config", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def ddp_config(out_dir, epochs=3, **extra) -> RunConfig:
    return RunConfig(student="resnet8", method="CKD", dataset=DATA, teacher="resnet8",
                     teacher_checkpoint="untrained", epochs=epochs, schedule="cosine", lr=0.05,
                     batch_size=64, device="cpu", out_dir=str(out_dir), progress=False,
                     loss={"negatives_scope": "global"}, **extra)


def run_to_end(config: RunConfig, path) -> dict:
    path.write_text(yaml.safe_dump(config.to_dict()))
    proc = torchrun(path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert out.count(f"{config.run_id()}: best top-1") == 1, out  # rank 0's summary only
    return results.read_record(results.record_path(config.out_dir, config.run_id()))


@pytest.mark.slow
def test_ddp_run_records_and_resume_equals_uninterrupted(tmp_path):
    straight_cfg = ddp_config(tmp_path / "straight", epochs=4)
    straight = run_to_end(straight_cfg, tmp_path / "straight.yaml")
    assert straight["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 64,
                                       "per_device_batch": 32, "negatives_scope": "global"}
    assert straight["history"][0]["train_images"] == 512  # metrics reduced over both ranks
    assert len(list((tmp_path / "straight").glob("*/record.json"))) == 1

    killed_cfg = ddp_config(tmp_path / "killed", epochs=4)
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(killed_cfg.to_dict()))
    record_file = results.record_path(killed_cfg.out_dir, killed_cfg.run_id())
    proc = torchrun(config_file, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if record_file.is_file() and json.loads(record_file.read_text())["epochs_done"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    resumed = run_to_end(killed_cfg, config_file)
    run_dir = lambda cfg: tmp_path / cfg.out_dir / cfg.run_id()  # noqa: E731
    a = torch.load(run_dir(straight_cfg) / "model_last.pth", weights_only=False)["model"]
    b = torch.load(run_dir(killed_cfg) / "model_last.pth", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["loss_ckd"] for h in resumed["history"]] == [
        h["loss_ckd"] for h in straight["history"]]
