"""Couplings: independent keeps the pairing; exact OT is a permutation and lowers the cost."""

import itertools

import pytest
import torch

from flow3d.core.couplings import independent_coupling, ot_coupling, ot_permutation


def _cost(a, b):
    return (a - b).reshape(a.shape[0], -1).square().sum(1).mean()


def test_independent_coupling_is_identity():
    x_0, x_1 = torch.randn(5, 2), torch.randn(5, 2)
    a, b = independent_coupling(x_0, x_1)
    assert a is x_0 and b is x_1


def test_ot_coupling_is_a_permutation_and_lowers_cost():
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(64, 4, 3, generator=g)
    x_1 = torch.randn(64, 4, 3, generator=g) + 2.0
    perm = ot_permutation(x_0, x_1)
    assert torch.equal(perm.sort().values, torch.arange(64))
    a, b = ot_coupling(x_0, x_1)
    assert b is x_1 and torch.equal(a, x_0[perm])
    assert _cost(a, b) < 0.9 * _cost(x_0, x_1)
    # no random permutation does better
    for _ in range(20):
        r = torch.randperm(64, generator=g)
        assert _cost(a, b) <= _cost(x_0[r], x_1) + 1e-6


def test_ot_coupling_is_exact_on_small_batches():
    g = torch.Generator().manual_seed(1)
    x_0, x_1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    best = min(_cost(x_0[list(p)], x_1) for p in itertools.permutations(range(6)))
    a, b = ot_coupling(x_0, x_1)
    torch.testing.assert_close(_cost(a, b), best)


def test_ot_recovers_a_shuffled_copy():
    x_1 = torch.randn(32, 5)
    shuffle = torch.randperm(32)
    a, _ = ot_coupling(x_1[shuffle] + 1e-3 * torch.randn(32, 5), x_1)
    torch.testing.assert_close(a, x_1, atol=1e-2, rtol=0)


def test_coupling_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="must match"):
        ot_coupling(torch.zeros(3, 2), torch.zeros(4, 2))
