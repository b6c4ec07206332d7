"""Affine-path schedulers: ``t -> (alpha_t, sigma_t, d alpha_t/dt, d sigma_t/dt)``.

An affine probability path interpolates noise ``x_0`` (t = 0) and data ``x_1`` (t = 1) as

    x_t = alpha_t x_1 + sigma_t x_0,    dx_t/dt = d_alpha_t x_1 + d_sigma_t x_0

(Lipman et al. 2023, "Flow Matching for Generative Modeling", Sec. 4; Liu et al. 2023,
"Flow Straight and Fast"). A scheduler holds no state but its constants; it is evaluated on a
tensor ``t`` of any shape and returns four tensors of that shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.errors import ConfigError

__all__ = [
    "SCHEDULERS",
    "CosineScheduler",
    "LinearScheduler",
    "Scheduler",
    "SchedulerOutput",
    "VPScheduler",
    "build_scheduler",
]


@dataclass(frozen=True)
class SchedulerOutput:
    """Coefficients of ``x_t = alpha_t x_1 + sigma_t x_0`` and their time derivatives."""

    alpha_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_sigma_t: Tensor


class Scheduler:
    """Base class: subclasses implement :meth:`__call__` for ``t`` in [0, 1]."""

    name: str = "scheduler"

    def __call__(self, t: Tensor) -> SchedulerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearScheduler(Scheduler):
    """Rectified flow / conditional OT: ``alpha_t = t``, ``sigma_t = 1 - t``.

    The velocity target is ``x_1 - x_0`` (Liu et al. 2023, Eq. 1).
    """

    name = "linear"

    def __call__(self, t: Tensor) -> SchedulerOutput:
        return SchedulerOutput(
            alpha_t=t, sigma_t=1.0 - t, d_alpha_t=torch.ones_like(t), d_sigma_t=-torch.ones_like(t)
        )


class CosineScheduler(Scheduler):
    """Trigonometric path: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``.

    Variance preserving (alpha^2 + sigma^2 = 1) with a straight-line speed in angle
    (Nichol & Dhariwal 2021's cosine schedule in continuous time; Albergo & Vanden-Eijnden
    2023, stochastic interpolants).
    """

    name = "cosine"

    def __call__(self, t: Tensor) -> SchedulerOutput:
        half_pi = 0.5 * math.pi
        s, c = torch.sin(half_pi * t), torch.cos(half_pi * t)
        return SchedulerOutput(alpha_t=s, sigma_t=c, d_alpha_t=half_pi * c, d_sigma_t=-half_pi * s)


class VPScheduler(Scheduler):
    """Variance-preserving diffusion path (Song et al. 2021, "Score-Based Generative
    Modeling through SDEs", VP SDE with linear beta).

    With diffusion time ``s = 1 - t`` and ``B(s) = beta_min s + (beta_max - beta_min) s^2 / 2``:
    ``alpha_t = exp(-B(s) / 2)``, ``sigma_t = sqrt(1 - alpha_t^2)``. Note ``alpha_0`` is small
    but not zero (about 6.6e-3 for the default betas), as in the VP SDE. ``d_sigma_t`` is
    infinite at t = 1 (sigma = 0); it is evaluated with sigma clamped at ``eps``.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-12):
        if not 0.0 <= beta_min <= beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.eps = float(beta_min), float(beta_max), float(eps)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        s = 1.0 - t
        big_b = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2
        beta = self.beta_min + (self.beta_max - self.beta_min) * s  # dB/ds
        alpha = torch.exp(-0.5 * big_b)
        sigma = torch.sqrt((1.0 - alpha**2).clamp_min(0.0))
        d_alpha = 0.5 * beta * alpha  # d/dt = -d/ds
        d_sigma = -alpha * d_alpha / sigma.clamp_min(self.eps)
        return SchedulerOutput(alpha_t=alpha, sigma_t=sigma, d_alpha_t=d_alpha, d_sigma_t=d_sigma)

    def __repr__(self) -> str:
        return f"VPScheduler(beta_min={self.beta_min}, beta_max={self.beta_max})"


SCHEDULERS: dict[str, type[Scheduler]] = {
    "linear": LinearScheduler,
    "cosine": CosineScheduler,
    "vp": VPScheduler,
}


def build_scheduler(name: str, **kwargs) -> Scheduler:
    """Scheduler by name: ``"linear"`` (rectified flow), ``"cosine"`` or ``"vp"``."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ConfigError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}") from None
    return cls(**kwargs)
