"""CKD under DistributedDataParallel: where the negatives come from is an explicit choice.

The authors train ImageNet with ``nn.DataParallel``: each GPU computes the CKD loss on its own
slice of the batch, so a sample is contrasted only with the samples on the same GPU. Under DDP
(one process per GPU) the same thing happens by default. :func:`ckd_loss_distributed` makes
the choice explicit:

- ``negatives_scope="local"``: ``ckd_loss`` on this rank's slice (the authors' behaviour, the
  default for reproduction). DDP's gradient averaging gives the gradient of the mean of the
  per-rank losses.
- ``negatives_scope="global"``: every rank contrasts its own teacher anchors (rows) with the
  students of the whole global batch, gathered from all ranks with gradient
  (:func:`all_gather_with_grad`). The loss returned on a rank is the mean over its own rows, so
  the mean over ranks is exactly single-process ``ckd_loss`` on the concatenated batch (in
  rank order), and after DDP's averaging so are the gradients. The symmetric variant adds the
  column-wise half for this rank's own student columns against all teachers (gathered too), so
  it is exact as well, without any rank computing the whole matrix.

The value returned is this rank's share; for logging, average it over ranks
(``all_reduce(SUM) / world_size``). Every rank must call the global loss (it runs collectives)
with the same local batch size: use ``drop_last`` or the ImageNet loader's sharding, which
gives every rank equal batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._checks import autocast_off, check_logits_pair, check_temperature, upcast, upcast_scalar
from .ckd import NORMALIZE_EPS, check_ckd_options, ckd_loss

CKD_NEGATIVES_SCOPES = ("local", "global")
"""Accepted values of ``negatives_scope`` in :func:`ckd_loss_distributed`."""


def distributed_world(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group``; ``(0, 1)`` when torch.distributed is not in use."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _check_equal_shapes(tensor: torch.Tensor, world: int, group) -> None:
    """All ranks must gather tensors of one shape; otherwise raise on every rank (no hang)."""
    shape = torch.tensor(list(tensor.shape), dtype=torch.int64, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    listed = [tuple(s.tolist()) for s in shapes]
    if any(s != listed[0] for s in listed):
        raise ValueError(
            f"all_gather_with_grad: every rank must pass a tensor of the same shape (equal local "
            f"batch sizes; use drop_last=True or the ImageNet loader's sharding); got, by rank: "
            f"{listed}"
        )


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's tensor in rank order. Backward: SUM the incoming
    gradient over ranks and return this rank's slice (see :func:`all_gather_with_grad`)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group, rank: int, world: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.batch = group, rank, tensor.shape[0]
        tensor = tensor.contiguous()
        parts = [
            torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
            for _ in range(world)
        ]
        dist.all_gather(parts, tensor, group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch], None, None, None


def all_gather_with_grad(
    tensor: torch.Tensor, group=None, check_shapes: bool = True
) -> torch.Tensor:
    """Concatenate the ``[B_local, ...]`` tensors of all ranks (rank order), with gradient.

    Why the backward is an all-reduce: let rank r compute a loss L_r from the gathered tensor
    S = [s_0; ...; s_{W-1}], where s_q = f(theta, x_q) is produced on rank q. DDP averages the
    parameter gradients, (1/W) sum_q grad_theta(rank q's backward). The gradient we want is that
    of the global loss L = (1/W) sum_r L_r:
        grad_theta L = (1/W) sum_q (ds_q/dtheta)^T [sum_r dL_r/ds_q].
    The Jacobian ds_q/dtheta exists only on rank q, while dL_r/ds_q is computed on every rank
    r. So the backward sums the gathered gradient over ranks (all_reduce SUM) and hands rank q
    the rows of s_q: rank q's backward then yields (ds_q/dtheta)^T sum_r dL_r/ds_q, and DDP's
    average over q gives exactly grad_theta L. A plain ``dist.all_gather`` (no gradient) would
    lose every cross-rank term.

    When torch.distributed is not initialised or the world size is 1, ``tensor`` is returned
    unchanged. All ranks must pass the same shape; ``check_shapes`` verifies it with a small
    extra all_gather (one host sync) and raises a ValueError on every rank otherwise.
    Every rank must call this (and run the backward) in the same order: it is a collective.
    """
    rank, world = distributed_world(group)
    if world == 1:
        return tensor
    if check_shapes:
        _check_equal_shapes(tensor, world, group)
    return _AllGatherWithGrad.apply(tensor, group, rank, world)


def _global_ckd(
    s: torch.Tensor,
    t: torch.Tensor,
    tau,
    negatives: str,
    symmetric: bool,
    chunk_size: int | None,
    group,
    rank: int,
    world: int,
    check_shapes: bool,
) -> torch.Tensor:
    batch = s.shape[0]
    s_all = all_gather_with_grad(s, group, check_shapes)  # [N, C], N = world * batch
    total = s_all.shape[0]
    s_hat = F.normalize(s, dim=1, eps=NORMALIZE_EPS)
    t_hat = F.normalize(t, dim=1, eps=NORMALIZE_EPS)
    s_all_hat = F.normalize(s_all, dim=1, eps=NORMALIZE_EPS)
    mine = rank * batch + torch.arange(batch, device=s.device)  # global indices of my samples
    cols = torch.arange(total, device=s.device)
    is_positive = cols.unsqueeze(0) == mine.unsqueeze(1)  # [batch, N]: (i, rank*batch + i)
    if chunk_size is not None and chunk_size < total:
        off_chunk = (mine // chunk_size).unsqueeze(1) != (cols // chunk_size).unsqueeze(0)
    else:
        off_chunk = None

    # Rows: my teacher anchors against all students (M[i, :] for my i).
    if negatives == "teacher":
        rows = t_hat @ s_all_hat.t()
    else:  # student-student negatives, the teacher-student pair on the diagonal
        positives = (t_hat * s_hat).sum(dim=1)
        rows = torch.where(is_positive, positives.unsqueeze(1), s_hat @ s_all_hat.t())
    rows = rows / tau
    if off_chunk is not None:
        rows = rows.masked_fill(off_chunk, float("-inf"))
    at_positive = mine.unsqueeze(1)  # column of each row's positive (gather: no host sync)
    row_wise = (torch.logsumexp(rows, dim=1) - rows.gather(1, at_positive).squeeze(1)).mean()
    if not symmetric:
        return row_wise

    # Columns: my students against all teacher anchors (M[:, j] for my j), stored transposed
    # as [batch, N] so that the same masks apply.
    if negatives == "teacher":
        t_all = all_gather_with_grad(t, group, check_shapes)
        columns = s_hat @ F.normalize(t_all, dim=1, eps=NORMALIZE_EPS).t()
    else:  # M is symmetric off the diagonal: column j is row j
        columns = torch.where(is_positive, positives.unsqueeze(1), s_hat @ s_all_hat.t())
    columns = columns / tau
    if off_chunk is not None:
        columns = columns.masked_fill(off_chunk, float("-inf"))
    column_diag = columns.gather(1, at_positive).squeeze(1)
    column_wise = (torch.logsumexp(columns, dim=1) - column_diag).mean()
    return 0.5 * (row_wise + column_wise)


def ckd_loss_distributed(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    negatives_scope: str = "local",
    *,
    temperature: float | torch.Tensor = 1.0,
    negatives: str = "teacher",
    symmetric: bool = False,
    positive_only: bool = False,
    chunk_size: int | None = None,
    group=None,
    check_shapes: bool = True,
) -> torch.Tensor:
    """CKD on this rank's logits ``[B_local, C]`` with negatives from ``negatives_scope``.

    ``"local"``: ``ckd_loss`` on the local slice (authors' DataParallel behaviour).
    ``"global"``: this rank's rows of the global-batch CKD matrix (see the module docstring);
    the mean over ranks equals ``ckd_loss`` on the concatenated batch, and the gradients after
    DDP's averaging equal its gradients. With ``chunk_size`` the chunks are consecutive samples
    of the concatenated (global) batch. ``positive_only`` has no negatives, so both scopes give
    the same. The other keywords are those of :func:`~ckd_lib.losses.ckd_loss`.

    Without torch.distributed (or with world size 1) both scopes return ``ckd_loss`` unchanged.
    ``group``: the process group (default: the world). ``check_shapes``: verify equal local
    batch sizes across ranks (one small all_gather; set False in a tight loop once trusted).
    """
    if not isinstance(negatives_scope, str) or negatives_scope not in CKD_NEGATIVES_SCOPES:
        raise ValueError(
            f"ckd_loss_distributed: negatives_scope={negatives_scope!r} is not one of "
            f"{CKD_NEGATIVES_SCOPES}"
        )
    kwargs = dict(
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        positive_only=positive_only,
        chunk_size=chunk_size,
    )
    rank, world = distributed_world(group)
    if negatives_scope == "local" or world == 1 or positive_only:
        return ckd_loss(logits_student, logits_teacher, **kwargs)
    check_ckd_options(negatives, symmetric, positive_only, chunk_size)
    check_logits_pair(logits_student, logits_teacher, "ckd_loss_distributed")
    check_temperature(temperature, "ckd_loss_distributed")
    with autocast_off(logits_student):
        # Gather in float32 (at least): a few MB at ImageNet sizes, and exact gradient sums.
        s = upcast(logits_student)
        t = upcast(logits_teacher).to(s.dtype)
        tau = upcast_scalar(temperature, s)
        return _global_ckd(
            s, t, tau, negatives, symmetric, chunk_size, group, rank, world, check_shapes
        )
