"""A recipe's ``flow:`` section turned into core objects, so every head reads it the same way.

    sampler = time_sampler(recipe.flow)        # t ~ p(t) for training
    path = affine_path(recipe.flow)            # x_t, dx_t from (x_0, x_1, t)
    loss = flow_loss(recipe.flow, pred, path_sample.dx_t, t, mask=mask)
"""

from __future__ import annotations

import torch
from torch import Tensor

from flow3d.core.couplings import ot_coupling
from flow3d.core.losses import time_weight, velocity_loss
from flow3d.core.paths import AffinePath
from flow3d.core.schedulers import build_scheduler
from flow3d.core.time import build_time_sampler
from flow3d.engine.config import FlowConfig
from flow3d.engine.keys import suggest
from flow3d.errors import ConfigError

__all__ = ["affine_path", "couple", "flow_loss", "time_sampler"]

# which TimeSamplerConfig fields each sampler takes
_TIME_KWARGS: dict[str, tuple[str, ...]] = {
    "uniform": (),
    "logit_normal": ("mean", "std"),
    "mode": ("scale",),
    "u_shaped": ("a",),
}


def time_sampler(flow: FlowConfig):
    """The training-time sampler of ``flow.time_sampler`` (:mod:`flow3d.core.time`)."""
    cfg = flow.time_sampler
    if cfg.name not in _TIME_KWARGS:
        raise ConfigError(
            f"flow.time_sampler.name: unknown sampler {cfg.name!r}"
            + suggest(cfg.name, sorted(_TIME_KWARGS))
        )
    return build_time_sampler(cfg.name, **{k: getattr(cfg, k) for k in _TIME_KWARGS[cfg.name]})


def affine_path(flow: FlowConfig):
    """``x_t = alpha_t x_1 + sigma_t x_0`` with ``flow.scheduler``."""
    return AffinePath(build_scheduler(flow.scheduler))


def flow_loss(
    flow: FlowConfig,
    pred: Tensor,
    target: Tensor,
    t: Tensor,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """``flow.loss.kind`` between velocities, weighted per sample by ``flow.loss.time_weight``."""
    cfg = flow.loss
    weight = None if cfg.time_weight == "none" else time_weight(t, cfg.time_weight)
    return velocity_loss(pred, target, kind=cfg.kind, mask=mask, weight=weight,
                         huber_c=cfg.huber_c)


def couple(flow: FlowConfig, x_0: Tensor, x_1: Tensor) -> tuple[Tensor, Tensor]:
    """Re-pair noise and data within the minibatch by ``flow.coupling``."""
    if flow.coupling == "independent":
        return x_0, x_1
    if flow.coupling == "ot":
        with torch.no_grad():
            return ot_coupling(x_0, x_1)
    raise ConfigError(
        f"flow.coupling: unknown coupling {flow.coupling!r} (choose 'independent' or 'ot')"
    )
