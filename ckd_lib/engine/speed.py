"""Resolution of the speed options ("auto" → a concrete choice) and the CUDA-graph step wrapper.

Defaults come from measurement (benchmarks/RESULTS.md): on CUDA the whole training step —
teacher forward, every student's forward, loss, backward and optimizer update — is captured once
as a CUDA graph and replayed, because at the recipes' batch of 64 the step is bound by kernel
launches, not arithmetic. On the CPU nothing is captured and everything stays in float32, which
is also the bit-for-bit deterministic path the resume tests rely on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ckd_lib.config import ConfigError, RunConfig

EVAL_BATCH_GPU = 1000
EVAL_BATCH_CPU = 64


def resolve_device(config: RunConfig, local_rank: int | None = None) -> torch.device:
    """The run's device; under torchrun, CUDA device `local_rank` of this node.

    Reads only ``config.device``, so the detection engine's configs use it too.
    """
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={config.device!r} but CUDA is not available here; use 'cpu' "
                          "or 'auto'")
    return device


def resolve_speed(config: RunConfig, device: torch.device, world_size: int = 1) -> dict:
    """The concrete speed options of a run, as written to its record.

    Under DDP (world_size > 1) the step is not captured: its gradient all-reduce runs inside
    DDP's hooks, and the full-resolution recipes that use DDP are bound by arithmetic anyway.
    """
    cuda = device.type == "cuda"
    if config.cuda_graphs is True and world_size > 1:
        raise ConfigError("cuda_graphs=True is not offered under DDP; use 'auto' or False")
    if config.cuda_graphs is True and not cuda:
        raise ConfigError(f"cuda_graphs=True needs a CUDA device; this run is on {device}")
    if config.amp == "bf16" and not cuda:
        raise ConfigError("amp='bf16' is offered on CUDA only; use amp='none' on the CPU")
    if cuda:  # fixed shapes throughout a run: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    return {
        # evaluation batch: large on a GPU; on a CPU a batch of 1,000 32x32 images runs 2.7x
        # slower per image than one of 64 (resnet8 on 2 cores, issue 14's measurement)
        "eval_batch_size": config.eval_batch_size or (EVAL_BATCH_GPU if cuda else EVAL_BATCH_CPU),
        "device": str(device),
        "cudnn_benchmark": cuda,
        # Image folders: the PIL DataLoader until benchmarks/device_check.py measures the
        # nvjpeg loader faster end to end on a GPU (it has not run on one yet).
        "loader": config.loader if config.loader != "auto" else (
            "torch" if config.model_zoo == "imagenet" else "gpu"),
        "amp": ("bf16" if cuda else "none") if config.amp == "auto" else config.amp,
        # channels_last on every device: on the CPU too (oneDNN's convolutions), a training
        # forward + backward at batch 64 took 13-34% less time than in NCHW for the CIFAR-zoo
        # models measured, vgg13 alike in both (benchmarks/cpu_memory_format.py, RESULTS.md)
        "channels_last": True if config.channels_last == "auto" else bool(config.channels_last),
        "cuda_graphs": (cuda and world_size == 1 and config.model_zoo == "cifar")
        if config.cuda_graphs == "auto"
        else bool(config.cuda_graphs),
    }


def autocast_context(device: torch.device, amp: str):
    """bf16 autocast on CUDA; the weight-cast cache is off so a captured graph recasts."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


class GraphedStep:
    """Replays a training step captured as one CUDA graph; other batch shapes run eagerly.

    The first `warmup` calls run eagerly on a side stream (real training steps: they also let
    cuDNN and the allocator settle, and make every .grad exist so the graph accumulates into fixed
    storage). The next call captures the step on its static input buffers and replays it. A batch
    of another shape (the last, partial batch of an epoch) runs eagerly on the same parameters,
    gradients and accumulators, so the graph and eager steps compute the same recipe.
    """

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], None], warmup: int = 3):
        self.step = step
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.static_y: torch.Tensor | None = None

    def _eager_side_stream(self, x, y):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step(x, y)
        torch.cuda.current_stream().wait_stream(side)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.graph is None:
            if self.calls < self.warmup:
                self.calls += 1
                self._eager_side_stream(x, y)
                return
            self.static_x, self.static_y = x.clone(), y.clone()
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a DataLoader's pin-memory thread may allocate pinned memory while
            # this thread captures; in the default "global" mode that invalidates the capture
            # (seen on an H200 with the ImageNet loader).
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.step(self.static_x, self.static_y)
        if x.shape != self.static_x.shape:
            self.step(x, y)
            return
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
