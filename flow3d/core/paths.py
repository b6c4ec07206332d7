"""Probability paths: turn ``(x_0, x_1, t)`` into a :class:`PathSample` ``(x_t, dx_t)``.

Convention: ``t = 0`` is the source (noise) ``x_0``, ``t = 1`` is data ``x_1``; ``dx_t`` is the
conditional velocity ``d x_t / dt`` that a flow-matching model regresses (Lipman et al. 2023,
Eq. 9). ``t`` is a ``[B]`` tensor broadcast over the trailing dimensions of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.core.schedulers import LinearScheduler, Scheduler

__all__ = ["AffinePath", "GeodesicPath", "PathSample", "expand_time"]


@dataclass
class PathSample:
    """One draw from a path: endpoints, times and the point/velocity at those times.

    ``x_0, x_1, x_t: [B, ...]`` (points), ``t: [B]``, ``dx_t: [B, ...]`` (a tangent at ``x_t``;
    for Euclidean states the same shape as ``x_t``).
    """

    x_0: Tensor
    x_1: Tensor
    t: Tensor
    x_t: Tensor
    dx_t: Tensor


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape ``t: [B]`` (or a scalar) to ``[B, 1, ..., 1]`` so it broadcasts against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be a scalar or [B={x.shape[0]}], got shape {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def _check_pair(x_0: Tensor, x_1: Tensor) -> None:
    if x_0.shape != x_1.shape:
        raise ValueError(f"x_0 {tuple(x_0.shape)} and x_1 {tuple(x_1.shape)} differ in shape")


class AffinePath:
    """``x_t = alpha_t x_1 + sigma_t x_0`` for a :class:`~flow3d.core.schedulers.Scheduler`.

    With the default :class:`LinearScheduler` this is the rectified-flow / conditional-OT path
    ``x_t = t x_1 + (1 - t) x_0`` with target velocity ``x_1 - x_0``.
    """

    def __init__(self, scheduler: Scheduler | None = None):
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        _check_pair(x_0, x_1)
        sched = self.scheduler(expand_time(t, x_1))  # each [B, 1, ..., 1]
        x_t = sched.alpha_t * x_1 + sched.sigma_t * x_0
        dx_t = sched.d_alpha_t * x_1 + sched.d_sigma_t * x_0
        return PathSample(x_0=x_0, x_1=x_1, t=t, x_t=x_t, dx_t=dx_t)

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"


def _kappa_linear(t: Tensor) -> tuple[Tensor, Tensor]:
    return t, torch.ones_like(t)


class GeodesicPath:
    """Geodesic interpolation on a manifold (Chen & Lipman 2024, "Flow Matching on General
    Geometries", Eq. 13): ``x_t = exp_{x_0}(kappa(t) log_{x_0}(x_1))``.

    ``kappa`` is ``"linear"`` (``kappa(t) = t``) or a callable ``t -> (kappa_t, d kappa_t/dt)``
    with ``kappa(0) = 0`` and ``kappa(1) = 1``. The velocity is the tangent at ``x_t``

        dx_t = kappa'(t) log_{x_t}(x_1) / (1 - kappa_t)     (kappa_t <= 1/2)
             = -kappa'(t) log_{x_t}(x_0) / kappa_t           (kappa_t > 1/2)

    which are equal on a geodesic; picking by ``kappa_t`` keeps the denominator >= 1/2, so it
    is finite at both ends. For ``SO3Quaternion`` it is the constant body-frame rotation
    vector ``kappa' log(q_0^-1 q_1)`` (ReQFlow's exponential-format SLERP).
    """

    def __init__(self, manifold, kappa: str | Callable[[Tensor], tuple[Tensor, Tensor]] = "linear"):
        if kappa == "linear":
            kappa = _kappa_linear
        elif not callable(kappa):
            raise ValueError(f"kappa must be 'linear' or a callable, got {kappa!r}")
        self.manifold = manifold
        self.kappa = kappa

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        _check_pair(x_0, x_1)
        m = self.manifold
        k_t, dk_t = self.kappa(expand_time(t, x_1))  # [B, 1, ..., 1]
        x_t = m.expmap(x_0, k_t * m.logmap(x_0, x_1))
        to_end = m.logmap(x_t, x_1) / (1.0 - k_t).clamp_min(0.5)
        from_start = -m.logmap(x_t, x_0) / k_t.clamp_min(0.5)
        dx_t = dk_t * torch.where(k_t <= 0.5, to_end, from_start)
        return PathSample(x_0=x_0, x_1=x_1, t=t, x_t=x_t, dx_t=dx_t)

    def __repr__(self) -> str:
        return f"GeodesicPath({self.manifold!r})"
