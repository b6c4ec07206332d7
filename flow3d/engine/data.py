"""Step-indexed batches: the batch for any global micro-step is a pure function of the seed.

Epoch ``e`` is ``head.epoch_batches(dataset, default_rng([seed, e]), batch_size)``; the epochs
are laid end to end and global batch ``g`` is consumed by micro-step ``g // world_size`` on
rank ``g % world_size``. Resuming at optimiser step ``s`` with ``accumulate`` micro-batches per
step starts at micro-step ``s * accumulate``: exactly the batches an uninterrupted run would
have seen, on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from flow3d.errors import DataError

__all__ = ["StepBatchSampler", "epoch_rng"]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator a head draws epoch ``epoch``'s order from."""
    return np.random.default_rng([int(seed), int(epoch)])


class StepBatchSampler:
    """Batch sampler over micro-steps ``[start, stop)`` for one rank.

    ``epoch_batches(epoch)`` returns that epoch's list of index batches (deterministic).
    """

    def __init__(
        self,
        epoch_batches: Callable[[int], list[list[int]]],
        *,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.epoch_batches = epoch_batches
        self.start, self.stop = int(start), int(stop)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _epoch(self, epoch: int) -> list[list[int]]:
        batches = self.epoch_batches(epoch)
        if not batches:
            raise DataError(f"epoch {epoch} has no batches: the training dataset is empty")
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        # locate the epoch that holds the first global batch index
        g = self.start * self.world_size + self.rank
        epoch, offset = 0, 0
        batches = self._epoch(0)
        while g >= offset + len(batches):
            offset += len(batches)
            epoch += 1
            batches = self._epoch(epoch)
        for _ in range(len(self)):
            while g >= offset + len(batches):
                offset += len(batches)
                epoch += 1
                batches = self._epoch(epoch)
            yield list(batches[g - offset])
            g += self.world_size
