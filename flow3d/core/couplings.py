"""Couplings: how a minibatch of noise ``x_0`` is paired with a minibatch of data ``x_1``.

Independent pairing is the rectified-flow default; exact minibatch optimal transport
(Tong et al. 2024, "Improving and Generalizing Flow-Based Generative Models with Minibatch
Optimal Transport", OT-CFM; Pooladian et al. 2023, "Multisample Flow Matching") re-pairs the
batch so that the paths cross less and are straighter.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["COUPLINGS", "independent_coupling", "ot_coupling", "ot_permutation"]


def _check_batches(x_0: Tensor, x_1: Tensor) -> None:
    if x_0.shape != x_1.shape:
        raise ValueError(f"x_0 {tuple(x_0.shape)} and x_1 {tuple(x_1.shape)} must match")


def independent_coupling(x_0: Tensor, x_1: Tensor) -> tuple[Tensor, Tensor]:
    """The pairing as given: ``(x_0, x_1)`` drawn independently (product coupling)."""
    _check_batches(x_0, x_1)
    return x_0, x_1


def ot_permutation(x_0: Tensor, x_1: Tensor) -> Tensor:
    """The permutation ``perm [B]`` minimising ``sum_i ||x_0[perm[i]] - x_1[i]||^2``.

    Exact: the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the
    ``[B, B]`` squared-distance matrix, computed in float64 on the CPU. Cost O(B^3).
    """
    from scipy.optimize import linear_sum_assignment

    _check_batches(x_0, x_1)
    a = x_0.detach().reshape(x_0.shape[0], -1).to("cpu", torch.float64)  # [B, D]
    b = x_1.detach().reshape(x_1.shape[0], -1).to("cpu", torch.float64)  # [B, D]
    cost = torch.cdist(b, a).square()  # [B(x_1), B(x_0)]
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return perm.to(x_0.device)


def ot_coupling(x_0: Tensor, x_1: Tensor) -> tuple[Tensor, Tensor]:
    """Exact minibatch OT pairing for Euclidean states: returns ``(x_0[perm], x_1)``.

    ``x_1`` keeps its order, so labels or conditions aligned with the data stay aligned.
    """
    return x_0[ot_permutation(x_0, x_1)], x_1


COUPLINGS = {"independent": independent_coupling, "ot": ot_coupling}
