"""The rasterizer's 2D low-pass moved into the Gaussians, so that a scene made at one
resolution renders at any other (Mip-Splatting's 3D smoothing filter, Yu et al. 2024).

The rasterizer adds ``eps2d`` pixels^2 to every projected covariance (:mod:`flow3d.splat.
project`). A scene fitted or decoded at a low resolution leans on it: the GSDecoder, trained
at 64^2 with ``eps2d`` 0.1, makes Gaussians about a tenth of a pixel wide and lets the
low-pass spread each over its pixel. Rendered larger (a viewer at 800 pixels, ``flow3d splat
render`` at 4x) the low-pass shrinks with the pixels and the scene falls apart into dots.

:func:`bake_low_pass` adds to each Gaussian the isotropic 3D variance that projects to
``eps2d`` pixels^2 in the view that samples it most finely, ``eps2d (z / f)^2`` at that
view's depth ``z`` and focal length ``f`` (:func:`sampling_footprint`). An isotropic term
commutes with the Gaussian's rotation, so the new scales are exactly ``sqrt(s^2 + v)``; the
opacity is kept, as the rasterizer's low-pass keeps it. Rendered with ``eps2d = 0`` at the
cameras it was baked for, the baked scene looks as the original did with the low-pass (to
first order off the optical axis); at higher resolutions each Gaussian keeps the width it had
at the original one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians

FRUSTUM_MARGIN = 0.15  # a mean this far outside the image (a share of its side) still counts
NEAR = 0.01  # means closer to a camera than this (or behind it) are not seen by it


def sampling_footprint(means: Tensor, cameras: Cameras) -> Tensor:
    """``[N]``: for each of ``means [N, 3]``, the smallest world-space size of a pixel ``z /
    f`` among the cameras whose frustum (grown by :data:`FRUSTUM_MARGIN`) holds it; a mean no
    camera sees gets the largest ``z / f`` of any camera in front of which it lies, or, behind
    every camera, the largest of all (its Gaussian is smoothed generously rather than not at
    all)."""
    if len(means) == 0:
        return means.new_zeros(0)
    cams = cameras.to(means.dtype)
    rot, trans = cams.viewmats[:, :3, :3], cams.viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", rot, means) + trans[:, None]  # [C, N, 3]
    z = p[..., 2]
    fx, fy = cams.K[:, 0, 0, None], cams.K[:, 1, 1, None]
    zs = z.clamp_min(NEAR)
    u = fx * p[..., 0] / zs + cams.K[:, 0, 2, None]
    v = fy * p[..., 1] / zs + cams.K[:, 1, 2, None]
    mu, mv = FRUSTUM_MARGIN * cams.width, FRUSTUM_MARGIN * cams.height
    front = z > NEAR
    seen = front & (u > -mu) & (u < cams.width + mu) & (v > -mv) & (v < cams.height + mv)
    size = z.abs() / torch.minimum(fx, fy)  # [C, N]: a pixel's side at the mean's depth
    inf = torch.full_like(size, float("inf"))
    best = torch.where(seen, size, inf).min(dim=0).values
    fallback = torch.where(front, size, -inf).max(dim=0).values
    fallback = torch.where(torch.isfinite(fallback), fallback, size.max(dim=0).values)
    return torch.where(torch.isfinite(best), best, fallback)


def bake_low_pass(gaussians: Gaussians, cameras: Cameras, eps2d: float) -> Gaussians:
    """``gaussians`` with the rasterizer's ``eps2d`` low-pass (pixels^2, at ``cameras``'
    resolution) moved into their covariances (module docstring): render the result with
    ``eps2d = 0`` at ``cameras`` to see what the original showed with ``eps2d``, and at any
    other resolution without the gaps between Gaussians narrower than a pixel."""
    if eps2d < 0:
        raise ValueError(f"bake_low_pass: eps2d {eps2d} must be >= 0")
    if eps2d == 0 or len(gaussians) == 0:
        return gaussians
    footprint = sampling_footprint(gaussians.means.detach(), cameras)
    return gaussians.smoothed(eps2d * footprint.square())
