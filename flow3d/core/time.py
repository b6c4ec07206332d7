"""Training-time samplers ``t ~ p(t)`` on [0, 1] and inference time grids.

Convention: ``t = 0`` is noise, ``t = 1`` is data. Papers in the diffusers/SD3 convention use
``sigma = 1 - t``; where a distribution is not symmetric about 1/2 the docstring says how its
parameters map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flow3d.errors import ConfigError

__all__ = [
    "TIME_SAMPLERS",
    "LogitNormalTime",
    "ModeTime",
    "TimeSampler",
    "UShapedTime",
    "UniformTime",
    "build_time_sampler",
    "shift_time",
    "time_grid",
]


def _uniform(n: int, generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device)


class TimeSampler:
    """Base class: ``sample(n, *, generator=None, device=None) -> Tensor[n]`` in [0, 1]."""

    def sample(self, n: int, *, generator=None, device=None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class UniformTime(TimeSampler):
    """``t ~ U[0, 1]`` (Liu et al. 2023; Lipman et al. 2023)."""

    def sample(self, n: int, *, generator=None, device=None) -> Tensor:
        return _uniform(n, generator, device)


class LogitNormalTime(TimeSampler):
    """Logit-normal: ``t = sigmoid(mean + std * z)``, ``z ~ N(0, 1)`` (Esser et al. 2024,
    "Scaling Rectified Flow Transformers", SD3, Eq. 19).

    ``mean`` is in our convention: SD3's ``m`` (which biases towards noise for ``m > 0``)
    is ``mean = -m`` here.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        if std <= 0:
            raise ConfigError(f"logit_normal std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def sample(self, n: int, *, generator=None, device=None) -> Tensor:
        z = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.mean + self.std * z)


def mode_transform(u: Tensor, scale: float) -> Tensor:
    """SD3 Eq. 20: ``f(u; s) = 1 - u - s (cos^2(pi u / 2) - 1 + u)``; monotone decreasing
    for ``-1 <= s <= 2 / (pi - 2)``."""
    return 1.0 - u - scale * (torch.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)


class ModeTime(TimeSampler):
    """Mode sampling with heavy tails (Esser et al. 2024, SD3, Eq. 20): ``t = 1 - f(u; s)``,
    ``u ~ U[0, 1]``. The density is symmetric about 1/2 (``f(1-u) = 1 - f(u)``), so the same
    ``scale`` means the same thing in either time convention. ``scale = 0`` is uniform;
    ``scale > 0`` favours the middle.
    """

    def __init__(self, scale: float = 1.29):
        if not -1.0 <= scale <= 2.0 / (math.pi - 2.0):
            raise ConfigError(f"mode scale must be in [-1, {2 / (math.pi - 2):.4f}], got {scale}")
        self.scale = float(scale)

    def sample(self, n: int, *, generator=None, device=None) -> Tensor:
        u = _uniform(n, generator, device)
        return (1.0 - mode_transform(u, self.scale)).clamp(0.0, 1.0)


class UShapedTime(TimeSampler):
    """U-shaped density ``p(t) ∝ cosh(a (t - 1/2))`` on [0, 1] (Lee, Lin & Fanti 2024,
    "Improving the Training of Rectified Flows", Sec. 4.1: ``e^{a u} + e^{-a u}`` centred).

    Drawn by inverting the CDF ``F(t) = (sinh(a (t - 1/2)) + sinh(a / 2)) / (2 sinh(a / 2))``:
    ``t = 1/2 + asinh((2u - 1) sinh(a / 2)) / a``. Puts weight near both ends, where reflow
    training is hardest.
    """

    def __init__(self, a: float = 4.0):
        if a <= 0:
            raise ConfigError(f"u_shaped a must be > 0, got {a}")
        self.a = float(a)

    def sample(self, n: int, *, generator=None, device=None) -> Tensor:
        u = _uniform(n, generator, device)
        t = 0.5 + torch.asinh((2.0 * u - 1.0) * math.sinh(0.5 * self.a)) / self.a
        return t.clamp(0.0, 1.0)


TIME_SAMPLERS: dict[str, type[TimeSampler]] = {
    "uniform": UniformTime,
    "logit_normal": LogitNormalTime,
    "mode": ModeTime,
    "u_shaped": UShapedTime,
}


def build_time_sampler(name: str, **kwargs) -> TimeSampler:
    """Sampler by name: ``"uniform"``, ``"logit_normal"``, ``"mode"``, ``"u_shaped"``."""
    try:
        cls = TIME_SAMPLERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown time sampler {name!r}; choose from {sorted(TIME_SAMPLERS)}"
        ) from None
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"time sampler {name!r}: {e}") from None


# ---- inference grids ------------------------------------------------------------------------


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3 timestep shift (Esser et al. 2024, Eq. 23) applied to ``sigma = 1 - t``:
    ``sigma' = shift sigma / (1 + (shift - 1) sigma)``. ``shift > 1`` spends more steps at
    high noise. Fixes both ends (0 and 1) and preserves monotonicity."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    sigma = 1.0 - t
    sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    return 1.0 - sigma


def time_grid(
    steps: int | None = None,
    *,
    grid=None,
    shift: float | None = None,
    resolution: int | None = None,
    base_resolution: int = 256,
    t0: float = 0.0,
    t1: float = 1.0,
) -> Tensor:
    """Times ``[steps + 1]`` (float32) for a solver, from ``t0`` to ``t1``.

    - ``steps``: a uniform grid on [t0, t1] (``t0 > t1`` gives a descending grid: inversion).
    - ``grid``: an explicit grid (sequence or tensor), strictly monotone, inside [0, 1]; its
      first and last entries are the endpoints. Giving ``steps`` too is a ValueError.
    - ``shift``: static SD3 shift (:func:`shift_time`) applied to the grid.
    - ``resolution``: resolution-dependent shift ``sqrt(resolution / base_resolution)``
      (SD3 Sec. 5.3.2; resolutions are element counts: pixels, tokens, residues). Exclusive
      with ``shift``.
    """
    if steps is not None and grid is not None:
        raise ValueError("give either steps or an explicit grid, not both")
    if shift is not None and resolution is not None:
        raise ValueError("give either shift or resolution (which implies a shift), not both")
    if grid is not None:
        ts = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if ts.numel() < 2:
            raise ValueError(f"an explicit grid needs at least 2 times, got {ts.numel()}")
        if not torch.isfinite(ts).all() or ts.min() < 0.0 or ts.max() > 1.0:
            raise ValueError("an explicit grid must hold finite times inside [0, 1]")
        d = ts.diff()
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError("an explicit grid must be strictly monotone (up or down)")
    else:
        if steps is None:
            raise ValueError("give steps or an explicit grid")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if not (0.0 <= t0 <= 1.0 and 0.0 <= t1 <= 1.0) or t0 == t1:
            raise ValueError(f"need distinct t0, t1 in [0, 1], got {t0}, {t1}")
        ts = torch.linspace(t0, t1, int(steps) + 1, dtype=torch.float64)
    if resolution is not None:
        if resolution <= 0 or base_resolution <= 0:
            raise ValueError("resolution and base_resolution must be > 0")
        shift = math.sqrt(resolution / base_resolution)
    if shift is not None:
        ts = shift_time(ts, shift)
    return ts.to(torch.float32)
