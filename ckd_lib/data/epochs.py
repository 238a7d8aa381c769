"""The epoch bookkeeping every loader shares.

All loaders make epoch ``e``'s order and augmentation a function of ``(seed, e)``; this class holds
which ``e`` the next pass uses. ``set_epoch(e)`` fixes it (a resumed run calls it once with its
start epoch), and each pass then advances it, so a loop that never calls ``set_epoch`` still gets a
fresh order every epoch.
"""

from __future__ import annotations


class EpochCounter:
    """Mixin: ``epoch``, ``set_epoch`` and ``_start_epoch`` (used by ``__iter__``)."""

    _epoch: int = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration replay epoch ``epoch`` (order and augmentation)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    def _start_epoch(self) -> int:
        """The epoch of the pass that starts now; the next pass will use the one after."""
        epoch = self._epoch
        self._epoch += 1
        return epoch
