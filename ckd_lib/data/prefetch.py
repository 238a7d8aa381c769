"""Prepare the next batches in a background thread while the caller trains on this one.

Why: with GPU decoding the loader's work happens in the training process. nvJPEG's decode call
blocks its calling thread until the decode has finished, and cropping 512 images is a few
thousand small kernel launches. Done in the training thread, that host time would add to every
step; in one background thread it overlaps the step's own launches (the decoder and the tensor
ops release the GIL while they run), and on CUDA the work is queued on a side stream, so the GPU
decodes batch k+1 while it trains on batch k.

Batches are prepared one at a time, in order, by a single thread, so their content does not
depend on timing. The caller's iterator (a DataLoader's) is advanced in the caller's thread:
what it does with torch's global random state (the seeded augmentation draws of
``num_workers=0``) stays in that thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

Item = TypeVar("Item")


def prepared_ahead(items: Iterable, prepare: Callable[..., Item], depth: int) -> Iterator[Item]:
    """``prepare(item)`` for each item, computed in one background thread up to ``depth`` items
    ahead of the consumer; results in order. Stopping early (``break``) cancels what is queued
    and waits only for the item being prepared. An exception in ``prepare`` is raised here, at
    the item it belongs to."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckd-batch-prep") as pool:
        try:
            for item in items:
                pending.append(pool.submit(prepare, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class StreamHandoff:
    """Runs the preparation on a side CUDA stream and hands its tensors to the consumer's stream.

    ``run(fn, *args)`` (in the background thread) calls ``fn`` with the side stream current and
    records an event after it; ``receive(tensors, event)`` (in the consumer's thread) makes the
    consumer's current stream wait for that event and tells the caching allocator that the
    tensors are now used on that stream, so their memory is not reused before the consumer's
    kernels have read it. On the CPU both are plain calls.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._stream: torch.cuda.Stream | None = None

    def run(self, fn: Callable, *args):
        if not self.cuda:
            return fn(*args), None
        with torch.cuda.device(self.device):  # the current device is per thread
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            with torch.cuda.stream(self._stream):
                out = fn(*args)
                event = torch.cuda.Event()
                event.record(self._stream)
        return out, event

    def receive(self, tensors: tuple[torch.Tensor, ...], event) -> tuple[torch.Tensor, ...]:
        if event is None:
            return tensors
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        for tensor in tensors:
            tensor.record_stream(current)
        return tensors
