"""The epoch bookkeeping every loader shares.

All loaders make epoch ``e``'s order and augmentation a function of ``(seed, e)``; this class holds
which ``e`` the next pass uses. ``set_epoch(e)`` fixes it (a resumed run calls it once with its
start epoch), and each pass then advances it, so a loop that never calls ``set_epoch`` still gets a
fresh order every epoch. ``set_epoch(e, start_batch=k)`` makes the next pass begin at batch ``k``
of epoch ``e`` (a run stopped inside an epoch resumes there): the batches are those of the whole
epoch's plan, so batch ``k`` onward equals what an uninterrupted pass yields from ``k`` on.
"""

from __future__ import annotations


class EpochCounter:
    """Mixin: ``epoch``, ``set_epoch`` and ``_start_epoch`` (used by ``__iter__``)."""

    _epoch: int = 0
    _start_batch: int = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration replay epoch ``epoch`` (order and augmentation), from batch
        ``start_batch`` on."""
        if epoch < 0 or start_batch < 0:
            raise ValueError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self._epoch = int(epoch)
        self._start_batch = int(start_batch)

    def _start_epoch(self) -> int:
        """The epoch of the pass that starts now; the next pass will use the one after.
        ``self.skip_batches`` is the number of leading batches this pass leaves out."""
        epoch = self._epoch
        self._epoch += 1
        self.skip_batches, self._start_batch = self._start_batch, 0
        return epoch
