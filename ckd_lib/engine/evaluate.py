"""Test-set evaluation: top-1, top-5 and mean cross-entropy, accumulated on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ckd_lib.engine.speed import autocast_context


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, amp: str = "none", reduce=None) -> dict:
    """Accuracy in percent over the whole loader; one host sync at the end, not per batch.

    `reduce`, when given, sums the counts over DDP ranks that each evaluated a shard.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device)
    count = 0
    loader.set_epoch(0)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_context(device, amp):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += y.shape[0]
    model.train(was_training)
    totals = torch.stack([correct1.double(), correct5.double(), loss_sum.double(),
                          torch.tensor(float(count), device=device, dtype=torch.float64)])
    if reduce is not None:
        reduce(totals)
    correct1, correct5, loss_sum, count = totals.tolist()
    if count == 0:
        raise ValueError("evaluation loader yielded no samples")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count,
            "loss": loss_sum / count, "count": int(count)}
