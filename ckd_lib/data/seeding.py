"""Seeds derived from (seed, epoch, ...) so that an epoch can be replayed in isolation.

Why: exact resume needs the order and augmentation of epoch ``e`` to depend only on
``(seed, e)``, never on how many random numbers earlier epochs consumed. Every loader
therefore starts each epoch from a fresh generator seeded by :func:`epoch_seed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import get_worker_info

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """Mix integers into one well-spread 63-bit seed (fits ``torch.Generator.manual_seed``).

    numpy's SeedSequence does the mixing: neighbouring inputs such as (0, 1) and (1, 0) give
    unrelated outputs, and the result is the same on every platform and numpy version.
    """
    for p in parts:
        if int(p) < 0:
            raise ValueError(f"seed parts must be non-negative integers, got {parts}")
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """Seed of epoch ``epoch`` of a run seeded ``seed``; ``stream`` separates independent uses."""
    return derive_seed(seed, epoch, stream)


def splitmix64(x: int) -> int:
    """One step of the splitmix64 mixer: a cheap per-sample seed from ``base + index``.

    Used where a seed is needed for each of ~50k samples per epoch and SeedSequence would
    cost more than the augmentation itself.
    """
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded_default_generator(sample_seed: int) -> Iterator[None]:
    """Run the body with torch's default CPU generator seeded by ``sample_seed``.

    torchvision's random transforms draw from that generator, so this is how a sample's
    augmentation becomes a function of its seed alone. Seeding the generator directly costs about
    a microsecond (``torch.manual_seed`` also seeds every accelerator: ~90 us per sample). In the
    main process the previous state is restored afterwards, so the caller's random stream does
    not depend on how many samples were loaded; a DataLoader worker owns its generator.
    """
    rng = torch.default_generator
    saved = rng.get_state() if get_worker_info() is None else None
    rng.manual_seed(sample_seed)
    try:
        yield
    finally:
        if saved is not None:
            rng.set_state(saved)
