"""2D target distributions for the toy head: exact samplers, seeded by a torch Generator."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flow3d.errors import ConfigError

__all__ = ["TARGETS", "sample_target"]


def eight_gaussians(n: int, generator: torch.Generator, *, radius: float = 3.0,
                    std: float = 0.15) -> Tensor:
    """Equal mixture of isotropic Gaussians at the 8 compass points of a circle."""
    k = torch.randint(0, 8, (n,), generator=generator)  # [n]
    angle = k.double() * (2 * math.pi / 8)
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=-1)  # [n, 2]
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (centres + std * noise).float()


def two_moons(n: int, generator: torch.Generator, *, radius: float = 3.0,
              std: float = 0.15) -> Tensor:
    """Two interleaved half circles (scikit-learn's make_moons shape), scaled to ``radius``."""
    upper = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    theta = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=-1) * (radius / 1.5)  # [n, 2]
    return (pts + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def checkerboard(n: int, generator: torch.Generator, *, radius: float = 3.0,
                 std: float = 0.0) -> Tensor:
    """Uniform on the black squares of a 4x4 board covering ``[-radius, radius]^2``."""
    u = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2  # [-2, 2)
    row = torch.randint(0, 2, (n,), generator=generator).double()
    v = torch.rand(n, generator=generator, dtype=torch.float64) - 2 * row  # [0,1) or [-2,-1)
    v = v + torch.remainder(torch.floor(u), 2)  # shift odd columns up one square
    pts = torch.stack([u, v], dim=-1) * (radius / 2)
    if std > 0:
        pts = pts + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return pts.float()


TARGETS = {"eight_gaussians": eight_gaussians, "two_moons": two_moons,
           "checkerboard": checkerboard}


def sample_target(name: str, n: int, *, seed: int = 0, radius: float = 3.0,
                  std: float = 0.15) -> Tensor:
    """``n`` exact samples ``[n, 2]`` (float32) from target ``name``."""
    if name not in TARGETS:
        raise ConfigError(f"data.target: unknown toy target {name!r} (choose from "
                          f"{', '.join(sorted(TARGETS))})")
    generator = torch.Generator().manual_seed(int(seed))
    return TARGETS[name](n, generator, radius=radius, std=std)
