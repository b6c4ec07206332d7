"""Editing with a trained flow, no retraining and no inversion: SDEdit and FlowEdit.

Both take velocity callables (conditions bound by closure) and run on the core solver.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flow3d.core.paths import AffinePath
from flow3d.core.schedulers import Scheduler
from flow3d.core.solvers import SolveResult, solve
from flow3d.core.time import time_grid

__all__ = ["flowedit", "sdedit"]

Velocity = Callable[[Tensor, Tensor], Tensor]


def sdedit(
    velocity: Velocity,
    x_data: Tensor,
    strength: float,
    *,
    steps: int,
    method: str = "euler",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    scheduler: Scheduler | None = None,
    **solve_kwargs,
) -> SolveResult:
    """SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
    Differential Equations") for flows: noise ``x_data`` to ``t_s = 1 - strength`` along the
    path, ``x_{t_s} = alpha x_data + sigma eps``, then solve from ``t_s`` to 1 in ``steps``
    steps. ``strength = 0`` returns ``x_data`` unchanged (no velocity call); ``strength = 1``
    is plain sampling from fresh noise. ``noise`` overrides the drawn ``eps``; other keyword
    arguments go to :func:`~flow3d.core.solvers.solve` (e.g. ``hooks``, ``manifold``).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        times = torch.ones(1, dtype=torch.float32, device=x_data.device)
        return SolveResult(x=x_data.clone(), nfe=0, times=times, trajectory=None)
    t_s = 1.0 - float(strength)
    if noise is None:
        noise = torch.randn(
            x_data.shape, generator=generator, dtype=x_data.dtype, device=x_data.device
        )
    t_b = torch.full((x_data.shape[0],), t_s, dtype=x_data.dtype, device=x_data.device)
    x_s = AffinePath(scheduler).sample(noise, x_data, t_b).x_t
    return solve(velocity, x_s, method=method, steps=steps, t0=t_s, t1=1.0, **solve_kwargs)


def flowedit(
    v_source: Velocity,
    v_target: Velocity,
    x_src: Tensor,
    *,
    steps: int = 50,
    n_max: int | None = None,
    n_min: int = 0,
    n_avg: int = 1,
    method: str = "euler",
    generator: torch.Generator | None = None,
) -> Tensor:
    """FlowEdit (Kulikov et al. 2024, "FlowEdit: Inversion-Free Text-Based Editing Using
    Pre-Trained Flow Models", Alg. 1), in our time convention (t = 0 noise, 1 data).

    On the uniform grid of ``steps`` steps, start at ``t = t_{steps - n_max}`` with
    ``z = x_src`` and integrate the *difference* field

        dz/dt = E_eps[ v_target(z_tar, t) - v_source(z_src, t) ],
        z_src = t x_src + (1 - t) eps,   z_tar = z_src + (z - x_src),

    (``n_avg`` fresh noises per evaluation) up to ``t_{steps - n_min}``; the last ``n_min``
    steps plain-sample ``v_target`` from ``z_tar``. The noise couples the two evaluations, so
    no inversion is needed; equal fields leave ``x_src`` exactly unchanged. Euler is the
    paper's integrator; other ``method`` values are allowed.
    """
    n_max = int(0.66 * steps) if n_max is None else int(n_max)
    if not 0 <= n_min < n_max <= steps:
        raise ValueError(f"need 0 <= n_min < n_max <= steps, got {n_min}, {n_max}, {steps}")
    if n_avg < 1:
        raise ValueError(f"n_avg must be >= 1, got {n_avg}")
    grid = time_grid(steps)
    start, stop = steps - n_max, steps - n_min

    def noisy_source(t: Tensor) -> Tensor:
        eps = torch.randn(x_src.shape, generator=generator, dtype=x_src.dtype,
                          device=x_src.device)  # fmt: skip
        return t * x_src + (1.0 - t) * eps

    def v_delta(z: Tensor, t: Tensor) -> Tensor:
        total = torch.zeros_like(z)
        for _ in range(n_avg):
            z_src = noisy_source(t)
            z_tar = z_src + (z - x_src)  # z_src + 0 is z_src bit for bit
            total = total + (v_target(z_tar, t) - v_source(z_src, t))
        return total / n_avg

    z = solve(v_delta, x_src, method=method, grid=grid[start : stop + 1]).x
    if n_min == 0:
        return z
    t_m = grid[stop].to(x_src.dtype)
    z_tar = noisy_source(t_m) + (z - x_src)
    return solve(v_target, z_tar, method=method, grid=grid[stop:]).x
