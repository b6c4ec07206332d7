"""Converters between model parameterisations and time conventions.

On an affine path ``x_t = alpha_t x_1 + sigma_t x_0`` (:mod:`flow3d.core.schedulers`) the
velocity ``v = alpha'_t x_1 + sigma'_t x_0``, the data prediction ``x_1`` and the noise
prediction ``x_0`` determine each other given ``x_t``: solving the 2x2 system

    [alpha  sigma ] [x_1]   [x_t]
    [alpha' sigma'] [x_0] = [ v ]

gives ``x_1 = (sigma' x_t - sigma v) / D`` and ``x_0 = (alpha v - alpha' x_t) / D`` with
``D = alpha sigma' - sigma alpha'`` (Lipman et al. 2024, "Flow Matching Guide and Code",
Sec. 4.8). The direct maps from ``x_1`` (or ``x_0``) divide by ``sigma_t`` (or ``alpha_t``),
which vanish at t = 1 (or 0); those denominators are clamped at ``eps``.

diffusers / SD3 use ``sigma = 1 - t`` (sigma = 1 is noise), a model input ``timestep =
1000 sigma`` and a "flow" output ``noise - data = dx/dsigma = -dx/dt``:
:func:`from_sigma_model` wraps such a model into our ``velocity(x, t)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flow3d.core.paths import expand_time
from flow3d.core.schedulers import LinearScheduler, Scheduler, SchedulerOutput
from flow3d.errors import ConfigError

__all__ = [
    "PREDICTIONS",
    "as_velocity",
    "convert_prediction",
    "from_sigma_model",
    "to_sigma_model",
]

PREDICTIONS = ("velocity", "x1", "x0")
Velocity = Callable[[Tensor, Tensor], Tensor]


def _coefficients(x_t: Tensor, t, scheduler: Scheduler | None) -> SchedulerOutput:
    scheduler = scheduler if scheduler is not None else LinearScheduler()
    return scheduler(expand_time(torch.as_tensor(t), x_t))


def _to_x1_x0(
    pred: Tensor, x_t: Tensor, c: SchedulerOutput, kind: str, eps: float
) -> tuple[Tensor, Tensor]:
    """``(x_1, x_0)`` implied by a prediction of kind ``kind`` at ``x_t``."""
    if kind == "velocity":
        det = c.alpha_t * c.d_sigma_t - c.sigma_t * c.d_alpha_t  # never 0 on a valid path
        return (c.d_sigma_t * x_t - c.sigma_t * pred) / det, (
            c.alpha_t * pred - c.d_alpha_t * x_t
        ) / det
    if kind == "x1":
        return pred, (x_t - c.alpha_t * pred) / c.sigma_t.clamp_min(eps)
    return (x_t - c.sigma_t * pred) / c.alpha_t.clamp_min(eps), pred  # kind == "x0"


def convert_prediction(
    pred: Tensor,
    x_t: Tensor,
    t: Tensor | float,
    *,
    src: str,
    dst: str,
    scheduler: Scheduler | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Convert ``pred [B, ...]`` at ``(x_t, t)`` from parameterisation ``src`` to ``dst``.

    Kinds: ``"velocity"`` (``dx_t/dt``), ``"x1"`` (data), ``"x0"`` (noise). ``t`` is a number,
    a 0-dim tensor or ``[B]``. The scheduler defaults to the linear (rectified-flow) one, where
    e.g. ``x1 = x_t + (1 - t) v`` and ``x0 = x_t - t v``.
    """
    for kind in (src, dst):
        if kind not in PREDICTIONS:
            raise ConfigError(f"unknown prediction kind {kind!r}; choose from {PREDICTIONS}")
    if src == dst:
        return pred
    c = _coefficients(x_t, t, scheduler)
    x_1, x_0 = _to_x1_x0(pred, x_t, c, src, eps)
    if dst == "velocity":
        return c.d_alpha_t * x_1 + c.d_sigma_t * x_0
    return x_1 if dst == "x1" else x_0


def as_velocity(
    model: Callable[[Tensor, Tensor], Tensor],
    prediction: str,
    scheduler: Scheduler | None = None,
    eps: float = 1e-6,
) -> Velocity:
    """Wrap ``model(x, t)`` that predicts ``prediction`` (``"x1"``, ``"x0"`` or
    ``"velocity"``) on our time axis into ``velocity(x, t)``."""
    if prediction not in PREDICTIONS:
        raise ConfigError(f"unknown prediction kind {prediction!r}; choose from {PREDICTIONS}")
    if prediction == "velocity":
        return model

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return convert_prediction(
            model(x, t), x, t, src=prediction, dst="velocity", scheduler=scheduler, eps=eps
        )

    return velocity


_SIGMA_PREDICTIONS = {"flow": None, "data": "x1", "noise": "x0"}


def from_sigma_model(
    model: Callable[[Tensor, Tensor], Tensor],
    *,
    prediction: str = "flow",
    timestep_scale: float = 1000.0,
    eps: float = 1e-6,
) -> Velocity:
    """Wrap a diffusers/SD3-convention model into our ``velocity(x, t)``.

    The model is called as ``model(x, timestep)`` with ``timestep = timestep_scale * sigma``,
    ``sigma = 1 - t``, on the path ``x = (1 - sigma) data + sigma noise``. ``prediction``:
    ``"flow"`` (SD3/Flux: ``noise - data``, so ``v = -output``), ``"data"`` or ``"noise"``.
    """
    if prediction not in _SIGMA_PREDICTIONS:
        raise ConfigError(
            f"unknown sigma-model prediction {prediction!r}; choose from {list(_SIGMA_PREDICTIONS)}"
        )
    kind = _SIGMA_PREDICTIONS[prediction]

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        out = model(x, timestep_scale * (1.0 - t))
        if kind is None:
            return -out
        return convert_prediction(out, x, t, src=kind, dst="velocity", eps=eps)

    return velocity


def to_sigma_model(velocity: Velocity, *, timestep_scale: float = 1000.0) -> Velocity:
    """The inverse of :func:`from_sigma_model` for ``prediction="flow"``: our velocity as a
    diffusers/SD3-style ``model(x, timestep) -> noise - data``."""

    def model(x: Tensor, timestep: Tensor) -> Tensor:
        timestep = torch.as_tensor(timestep, dtype=x.dtype, device=x.device)
        return -velocity(x, 1.0 - timestep / timestep_scale)

    return model
