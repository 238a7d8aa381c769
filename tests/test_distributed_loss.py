"""CKD under DDP (ckd_lib.losses.distributed): 2 CPU processes on gloo against one process.

One spawn (two processes, ~10 s) checks every case; the parent compares what the ranks saved
with single-process ``ckd_loss`` on the concatenated batch (loss and gradients of a small
linear student wrapped in DDP), in float64.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ckd_lib.losses import (
    CKD_NEGATIVES_SCOPES,
    all_gather_with_grad,
    ckd_loss,
    ckd_loss_distributed,
    distributed_world,
)

WORLD = 2
B_LOCAL = 4
FEATURES = 6
CLASSES = 5
GLOBAL_CASES = {
    "default": {},
    "tau": {"temperature": 0.5},
    "student_negatives": {"negatives": "student"},
    "symmetric": {"symmetric": True},
    "symmetric_student": {"symmetric": True, "negatives": "student"},
    "chunk": {"chunk_size": 3},  # chunks {0,1,2} {3,4,5} {6,7} straddle the two ranks
    "symmetric_chunk": {"symmetric": True, "chunk_size": 3},
    "positive_only": {"positive_only": True},
}
LOCAL_CASES = {"default": {}, "symmetric": {"symmetric": True}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def problem():
    """Inputs, teacher logits and the initial weights of the student (float64)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * B_LOCAL, FEATURES, generator=g, dtype=torch.float64)
    teacher = torch.randn(WORLD * B_LOCAL, CLASSES, generator=g, dtype=torch.float64)
    student = nn.Linear(FEATURES, CLASSES, dtype=torch.float64)
    with torch.no_grad():
        student.weight.copy_(torch.randn(CLASSES, FEATURES, generator=g, dtype=torch.float64))
        student.bias.copy_(torch.randn(CLASSES, generator=g, dtype=torch.float64))
    return x, teacher, student


def _ddp_case(rank: int, scope: str, kwargs: dict) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, teacher, student = problem()
    model = DDP(student)  # averages the gradients over ranks, as in training
    part = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    loss = ckd_loss_distributed(model(x[part]), teacher[part], scope, **kwargs)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return {
        "loss": mean_loss / WORLD,
        "weight": student.weight.grad.clone(),
        "bias": student.bias.grad.clone(),
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        results: dict = {"world": distributed_world()}
        for name, kwargs in GLOBAL_CASES.items():
            results[f"global/{name}"] = _ddp_case(rank, "global", kwargs)
        for name, kwargs in LOCAL_CASES.items():
            results[f"local/{name}"] = _ddp_case(rank, "local", kwargs)
        # all_gather_with_grad alone: rank order, and gradient = sum over ranks of the
        # gathered gradient, restricted to the local rows.
        mine = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        gathered = all_gather_with_grad(mine)
        weights = torch.arange(12, dtype=torch.float64).reshape(4, 3) * (rank + 1)
        (gathered * weights).sum().backward()
        results["gather"] = {"value": gathered.detach(), "grad": mine.grad.clone()}
        # Unequal local batches: every rank gets a clear ValueError (and nobody hangs).
        s = torch.randn(3 + rank, CLASSES)
        try:
            ckd_loss_distributed(s, torch.randn(3 + rank, CLASSES), "global")
            results["unequal"] = "no error"
        except ValueError as exc:
            results["unequal"] = str(exc)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run the 2-process job once; returns the list of the ranks' result dicts."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def single_process(kwargs: dict, sliced: bool = False) -> dict:
    """Reference: one process, the concatenated batch (or the mean of the per-slice losses)."""
    x, teacher, student = problem()
    logits = student(x)
    if sliced:
        parts = [slice(r * B_LOCAL, (r + 1) * B_LOCAL) for r in range(WORLD)]
        loss = sum(ckd_loss(logits[p], teacher[p], **kwargs) for p in parts) / WORLD
    else:
        loss = ckd_loss(logits, teacher, **kwargs)
    loss.backward()
    return {"loss": loss.detach(), "weight": student.weight.grad, "bias": student.bias.grad}


def assert_same(got: dict, want: dict) -> None:
    for key in ("loss", "weight", "bias"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", list(GLOBAL_CASES))
def test_global_scope_equals_single_process_on_concatenated_batch(ranks, name):
    want = single_process(GLOBAL_CASES[name])
    assert ranks[0]["world"] == (0, WORLD) and ranks[1]["world"] == (1, WORLD)
    for r in range(WORLD):  # DDP left identical gradients on both ranks
        assert_same(ranks[r][f"global/{name}"], want)


@pytest.mark.parametrize("name", list(LOCAL_CASES))
def test_local_scope_equals_mean_of_per_slice_losses(ranks, name):
    want = single_process(LOCAL_CASES[name], sliced=True)
    for r in range(WORLD):
        assert_same(ranks[r][f"local/{name}"], want)
    # ... and differs from the global-batch loss (the negatives really are local).
    global_loss = single_process(LOCAL_CASES[name])["loss"]
    assert not torch.allclose(ranks[0][f"local/{name}"]["loss"], global_loss)


def test_all_gather_with_grad_order_and_gradient(ranks):
    weights = [torch.arange(12, dtype=torch.float64).reshape(4, 3) * (r + 1) for r in range(2)]
    summed = weights[0] + weights[1]
    for r in range(WORLD):
        value = ranks[r]["gather"]["value"]
        torch.testing.assert_close(value[:2], torch.full((2, 3), 1.0, dtype=torch.float64))
        torch.testing.assert_close(value[2:], torch.full((2, 3), 2.0, dtype=torch.float64))
        torch.testing.assert_close(ranks[r]["gather"]["grad"], summed[2 * r : 2 * r + 2])


def test_unequal_local_batches_raise_on_every_rank(ranks):
    for r in range(WORLD):
        assert "same shape" in ranks[r]["unequal"], ranks[r]["unequal"]
        assert "(3, 5)" in ranks[r]["unequal"] and "(4, 5)" in ranks[r]["unequal"]


# ---------------------------------------------------------------------------- one process
@pytest.mark.parametrize("scope", CKD_NEGATIVES_SCOPES)
@pytest.mark.parametrize("kwargs", [{}, {"symmetric": True}, {"negatives": "student"}])
def test_without_process_group_returns_ckd_loss(scope, kwargs):
    assert not dist.is_initialized()
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert distributed_world() == (0, 1)
    torch.testing.assert_close(
        ckd_loss_distributed(s, t, scope, **kwargs), ckd_loss(s, t, **kwargs), rtol=0, atol=0
    )
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x


def test_world_size_one_process_group_returns_ckd_loss(tmp_path):
    assert not dist.is_initialized()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        g = torch.Generator().manual_seed(2)
        s = torch.randn(5, 3, generator=g, requires_grad=True)
        t = torch.randn(5, 3, generator=g)
        got = ckd_loss_distributed(s, t, "global", symmetric=True)
        want = ckd_loss(s, t, symmetric=True)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert all_gather_with_grad(s) is s
    finally:
        dist.destroy_process_group()


def test_invalid_scope_and_options_are_refused():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="negatives_scope='world'.*'local', 'global'"):
        ckd_loss_distributed(s, t, "world")
    with pytest.raises(ValueError, match="negatives"):
        ckd_loss_distributed(s, t, "global", negatives="both")
    with pytest.raises(TypeError):
        ckd_loss_distributed(s, t, "global", tau=1.0)  # a typo'd keyword is not swallowed
