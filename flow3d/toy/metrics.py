"""Sample-based distances between two point sets (used to score toy samples)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_distance", "mmd_rbf"]


def _check(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need [N, D] and [M, D] point sets, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least 2 points in each set")
    return x.double(), y.double()


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Szekely & Rizzo 2013), the unbiased U-statistic form

        E = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,

    zero iff the distributions agree (in expectation; small negative values are sampling
    noise). Not squared: same units as the points.
    """
    x, y = _check(x, y)
    n, m = len(x), len(y)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, Eq. 3) with a sum of Gaussian kernels
    ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))``."""
    x, y = _check(x, y)
    n, m = len(x), len(y)

    def k(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).square()
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())
