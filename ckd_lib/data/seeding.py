"""Seeds derived from (seed, epoch, ...) so that an epoch can be replayed in isolation.

Why: exact resume needs the order and augmentation of epoch ``e`` to depend only on
``(seed, e)``, never on how many random numbers earlier epochs consumed. Every loader
therefore starts each epoch from a fresh generator seeded by :func:`epoch_seed`.
"""

from __future__ import annotations

import numpy as np

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
