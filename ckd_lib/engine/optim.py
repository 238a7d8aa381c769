"""SGD with momentum and weight decay whose learning rate lives in a device tensor.

torch.optim.SGD reads its lr as a Python float, which a captured CUDA graph would freeze at its
capture-time value. This optimizer performs the same update (PyTorch's SGD: dampening 0, no
Nesterov) with foreach kernels and reads the lr from a tensor, so the whole training step,
optimizer included, can be replayed as one graph while the schedule changes the lr per epoch.
The tests check it against torch.optim.SGD.
"""

from __future__ import annotations

import torch


class TensorLrSGD:
    """p ← p − lr·b,  b ← momentum·b + (g + wd·p), with b initialised to 0 (so b₁ = g₁ + wd·p₀).

    `param_groups` is a list of (params, weight_decay) so that parameters such as a learnable
    temperature can be excluded from weight decay.
    """

    def __init__(self, param_groups, lr: torch.Tensor, momentum: float):
        self.lr = lr
        self.momentum = momentum
        self.groups = []
        for params, weight_decay in param_groups:
            params = [p for p in params if p.requires_grad]
            if params:
                bufs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
                self.groups.append((params, bufs, float(weight_decay)))

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for params, _, _ in self.groups for p in params]

    def zero_grad(self) -> None:
        """Zero gradients in place: their storage stays where a captured graph expects it."""
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for params, bufs, weight_decay in self.groups:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            if weight_decay:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, torch._foreach_mul(bufs, -self.lr))

    def state_dict(self) -> dict:
        return {"momentum_buffers": [[b.detach().cpu().clone() for b in bufs]
                                     for _, bufs, _ in self.groups]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        saved = state["momentum_buffers"]
        if len(saved) != len(self.groups):
            raise ValueError(
                f"optimizer state has {len(saved)} groups, expected {len(self.groups)}")
        for (_, bufs, _), saved_bufs in zip(self.groups, saved, strict=True):
            for buf, value in zip(bufs, saved_bufs, strict=True):
                buf.copy_(value)
