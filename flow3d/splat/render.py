"""``render(gaussians, cameras)``: RGB, alpha and expected depth per camera.

Front-to-back compositing in gsplat's conventions: per pixel (centre at integer + 0.5) and
Gaussian, ``power = 0.5 (a dx^2 + c dy^2) + b dx dy`` with the conic ``(a, b, c)``;
``alpha = min(alpha_max, opacity * exp(-power))``; fragments with ``alpha < 1/255`` (or
``power < 0``) are skipped; compositing stops before the fragment that would bring the
transmittance to ``<= 1e-4``. ``rgb = sum_i w_i c_i + T bg``, ``alpha = 1 - T``,
``depth = sum_i w_i z_i / alpha`` (expected depth; 0 where nothing is drawn).

Backends are chosen by argument, never by an environment variable:
``"torch"`` (the dense reference: every Gaussian against every pixel, obviously correct, slow),
``"cpu"`` (tile binning and a hand-written backward: the fast path on any machine), and
``"gsplat"`` (CUDA).
"""

from __future__ import annotations

from flow3d.splat.backend_cpu import rasterize_tiles
from flow3d.splat.backend_gsplat import render_gsplat
from flow3d.splat.backend_torch import pixel_centers, rasterize_dense
from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.project import project
from flow3d.splat.settings import RenderOutput, RenderSettings

__all__ = ["BACKENDS", "RenderOutput", "RenderSettings", "pixel_centers", "rasterize_dense",
           "render"]

BACKENDS = ("torch", "cpu", "gsplat")


def render(gaussians: Gaussians, cameras: Cameras, *, backend: str = "cpu",
           settings: RenderSettings | None = None) -> RenderOutput:
    """Render ``gaussians`` from every camera (see the module docstring for the maths)."""
    settings = settings or RenderSettings()
    if backend not in BACKENDS:
        raise ValueError(f"render: unknown backend {backend!r} (choose from {BACKENDS})")
    if backend == "gsplat":
        return render_gsplat(gaussians, cameras, settings)
    projected = project(gaussians, cameras, near=settings.near, far=settings.far,
                        eps2d=settings.eps2d, sh_degree=settings.sh_degree)
    if backend == "torch":
        rgb, alpha, depth = rasterize_dense(projected, cameras, settings)
    else:
        rgb, alpha, depth = rasterize_tiles(projected, cameras, settings)
    return RenderOutput(rgb, alpha, depth, projected)
