"""Step-indexed batches: resuming at any step and splitting over ranks are exact."""

from __future__ import annotations

import numpy as np
import pytest

from flow3d.engine.data import StepBatchSampler, epoch_rng
from flow3d.engine.head import Head
from flow3d.errors import DataError


def _epochs(n_items: int, batch: int, seed: int = 3):
    def fn(epoch: int) -> list[list[int]]:
        return Head.epoch_batches(None, range(n_items), epoch_rng(seed, epoch), batch)

    return fn


def _ragged(epoch: int) -> list[list[int]]:
    # epochs of different lengths, like the protein head's length buckets
    rng = epoch_rng(0, epoch)
    return [[epoch, i, int(rng.integers(100))] for i in range(2 + epoch % 3)]


@pytest.mark.parametrize("fn", [_epochs(10, 3), _ragged])
def test_resume_at_any_step_continues_exactly(fn):
    full = list(StepBatchSampler(fn, start=0, stop=25))
    assert len(full) == 25
    for start in range(25):
        assert list(StepBatchSampler(fn, start=start, stop=25)) == full[start:]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_single_process_stream(world):
    fn = _epochs(10, 2)
    single = list(StepBatchSampler(fn, start=0, stop=12 * world))
    per_rank = [list(StepBatchSampler(fn, start=0, stop=12, rank=r, world_size=world))
                for r in range(world)]
    interleaved = [per_rank[r][s] for s in range(12) for r in range(world)]
    assert interleaved == single
    resumed = list(StepBatchSampler(fn, start=5, stop=12, rank=1, world_size=world))
    assert resumed == per_rank[1][5:]


def test_epochs_are_permutations_and_seeded():
    fn = _epochs(10, 3)
    e0 = fn(0)
    assert len(e0) == 3 and all(len(b) == 3 for b in e0)
    assert len(set(sum(e0, []))) == 9
    assert fn(0) == e0 and fn(1) != e0
    assert _epochs(10, 3, seed=4)(0) != e0


def test_empty_dataset_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        list(StepBatchSampler(lambda e: [], start=0, stop=1))


def test_epoch_rng_is_independent_per_epoch():
    a = epoch_rng(0, 0).random(5)
    assert np.allclose(a, epoch_rng(0, 0).random(5))
    assert not np.allclose(a, epoch_rng(0, 1).random(5))
