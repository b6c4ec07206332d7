"""What every rasterizer backend takes and returns: ``RenderSettings`` and ``RenderOutput``
(a module of its own so the backends and ``render`` can all import it without a cycle)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flow3d.splat.project import Projected


@dataclass(frozen=True)
class RenderSettings:
    near: float = 0.01
    far: float = 1e10
    eps2d: float = 0.3  # low-pass added to the 2D covariance, pixels^2
    alpha_max: float = 0.99
    alpha_min: float = 1.0 / 255.0
    transmittance_min: float = 1e-4
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sh_degree: int | None = None  # None: every band the Gaussians carry
    tile_size: int = 16  # the fast backend's tile edge, pixels


@dataclass(frozen=True)
class RenderOutput:
    rgb: Tensor  # [C, H, W, 3]
    alpha: Tensor  # [C, H, W, 1]
    depth: Tensor  # [C, H, W, 1], expected depth along the camera's z
    projected: Projected | None = None  # per-camera 2D Gaussians, for densification stats
