"""Log-likelihood of data under a flow by the instantaneous change of variables.

For ``dx/dt = v(x, t)`` the density along a trajectory obeys
``d log p_t(x_t) / dt = -div v(x_t, t)`` (Chen et al. 2018, "Neural Ordinary Differential
Equations", Thm. 1), so with the source density ``p_0``

    log p_1(x_1) = log p_0(x_0) - int_0^1 div v(x_t, t) dt.

:func:`log_likelihood` integrates the augmented state ``[x, delta]`` with
``d delta / dt = div v`` *backwards* from ``t = 1`` (``delta = 0``) to ``t = 0`` with
:func:`flow3d.core.solvers.solve`, then ``log p_1(x_1) = log p_0(x_0) + delta(0)``. The
divergence is exact (one backward pass per dimension; small states) or Hutchinson's
estimate ``E[eps^T (dv/dx) eps]`` with Rademacher or Gaussian probes held fixed along the
trajectory (Grathwohl et al. 2019, FFJORD).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.core.solvers import solve

__all__ = ["LikelihoodResult", "divergence", "log_likelihood", "standard_normal_log_prob"]

Velocity = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LikelihoodResult:
    """``log_prob [B]`` of the data; ``x_0`` the source points it maps to; ``log_p0 [B]`` and
    ``delta_logp [B] = -int_0^1 div v dt`` its two terms; ``nfe`` velocity evaluations."""

    log_prob: Tensor
    x_0: Tensor
    log_p0: Tensor
    delta_logp: Tensor
    nfe: int


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``log N(x; 0, I)`` summed over all but the batch axis: ``[B, ...] -> [B]``."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * (flat.square().sum(1) + flat.shape[1] * math.log(2 * math.pi))


def divergence(
    v: Tensor, x: Tensor, *, probes: Tensor | None = None, create_graph: bool = False
) -> Tensor:
    """``div_x v`` per sample, ``[B]``, for ``v = f(x)`` computed with autograd.

    ``probes=None``: exact, ``sum_i d v_i / d x_i`` with one backward pass per dimension.
    ``probes [K, B, ...]``: Hutchinson's estimate ``mean_k eps_k^T (dv/dx) eps_k`` (one
    backward pass per probe).
    """
    batch = x.shape[0]
    if probes is None:
        v_flat = v.reshape(batch, -1)  # [B, D]
        div = torch.zeros(batch, dtype=v.dtype, device=v.device)
        for i in range(v_flat.shape[1]):
            (g,) = torch.autograd.grad(
                v_flat[:, i].sum(), x, retain_graph=True, create_graph=create_graph
            )
            div = div + g.reshape(batch, -1)[:, i]
        return div
    div = torch.zeros(batch, dtype=v.dtype, device=v.device)
    for eps in probes:
        (g,) = torch.autograd.grad(
            (v * eps).sum(), x, retain_graph=True, create_graph=create_graph
        )
        div = div + (g * eps).reshape(batch, -1).sum(1)
    return div / probes.shape[0]


def _draw_probes(kind: str, n: int, like: Tensor, generator) -> Tensor:
    shape = (n, *like.shape)
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    raise ValueError(f"unknown probe kind {kind!r}; choose 'rademacher' or 'gaussian'")


def log_likelihood(
    velocity: Velocity,
    x_1: Tensor,
    *,
    method: str = "rk4",
    steps: int | None = 32,
    estimator: str = "exact",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    log_p0: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    **solve_kwargs,
) -> LikelihoodResult:
    """``log p_1(x_1)`` under the flow of ``velocity`` with source density ``log_p0``.

    ``estimator``: ``"exact"`` (autograd divergence; cost grows with the dimension),
    ``"rademacher"`` or ``"gaussian"`` (Hutchinson with ``num_probes`` probes, unbiased).
    ``method``/``steps`` pick the solver (``method="dopri5", steps=None`` is adaptive);
    other keyword arguments (``atol``, ``rtol``, ``grid``...) go to ``solve``.
    """
    batch, shape = x_1.shape[0], x_1.shape
    dim = x_1[0].numel()
    probes = None
    if estimator != "exact":
        probes = _draw_probes(estimator, num_probes, x_1, generator)  # [K, B, ...]

    def augmented(state: Tensor, t: Tensor) -> Tensor:  # state [B, D + 1]
        with torch.enable_grad():
            x = state[:, :dim].reshape(shape).detach().requires_grad_(True)
            v = velocity(x, t)
            div = divergence(v, x, probes=probes)
        return torch.cat([v.detach().reshape(batch, dim), div.detach()[:, None]], dim=1)

    state = torch.cat([x_1.reshape(batch, dim), x_1.new_zeros(batch, 1)], dim=1)
    if "grid" in solve_kwargs:
        steps = None
    out = solve(augmented, state, method=method, steps=steps, t0=1.0, t1=0.0, **solve_kwargs)
    x_0 = out.x[:, :dim].reshape(shape)
    delta = out.x[:, dim]
    lp0 = log_p0(x_0)
    return LikelihoodResult(log_prob=lp0 + delta, x_0=x_0, log_p0=lp0, delta_logp=delta,
                            nfe=out.nfe)  # fmt: skip
