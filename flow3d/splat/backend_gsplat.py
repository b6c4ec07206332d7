"""The CUDA backend: gsplat's ``rasterization`` (fused projection, tile sort, compositing).

gsplat follows the same conventions as ``flow3d.splat.project`` and ``render.rasterize_dense``
(0.3 px low-pass, 1.3x fov Jacobian clamp, pixel centres at +0.5, alpha skip below 1/255, stop
before transmittance <= 1e-4, SH colours + 0.5 clamped at 0), with two differences a parity
test must account for:

* its alpha clamp is hard-coded to 0.999 in the CUDA kernel (``min(0.999f, opac * exp(-sigma))``)
  while ``RenderSettings.alpha_max`` defaults to 0.99; gsplat ignores ``alpha_max``,
  ``alpha_min`` and ``transmittance_min``, so compare against the reference run with
  ``RenderSettings(alpha_max=0.999)``;
* which Gaussians it keeps and which tiles it bins them into follow gsplat's own radii
  (versions differ), so images agree to ~1e-3 rather than to float rounding.

Depth is gsplat's ``"RGB+ED"`` mode: the expected depth ``sum w z / alpha``.
"""

from __future__ import annotations

import torch

from flow3d.errors import Flow3dError
from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.project import Projected
from flow3d.splat.settings import RenderOutput, RenderSettings

GSPLAT_ALPHA_MAX = 0.999  # gsplat's compiled-in clamp


def _rasterization():
    try:
        from gsplat import rasterization
    except ImportError as e:
        raise Flow3dError(f"render backend 'gsplat' needs the gsplat package "
                          f"(pip install 'flow3d[gpu]'): {e}") from e
    return rasterization


def render_gsplat(gaussians: Gaussians, cameras: Cameras,
                  settings: RenderSettings) -> RenderOutput:
    """``render(..., backend="gsplat")``: tensors go to the Gaussians' CUDA device (float32)."""
    if not torch.cuda.is_available():  # before the import: gsplat may JIT-compile on import
        raise Flow3dError("render backend 'gsplat' needs a CUDA GPU; use backend='cpu' here")
    rasterization = _rasterization()
    device = gaussians.device if gaussians.device.type == "cuda" else torch.device("cuda")
    g = gaussians.to(device=device, dtype=torch.float32)
    n_cams = len(cameras)
    bg = torch.tensor(settings.background, dtype=torch.float32, device=device).expand(n_cams, 3)
    colors, alphas, meta = rasterization(
        g.means, g.unit_quats, g.scales, g.opacities, g.sh,
        cameras.viewmats.to(device, torch.float32), cameras.K.to(device, torch.float32),
        cameras.width, cameras.height, near_plane=settings.near, far_plane=settings.far,
        eps2d=settings.eps2d, sh_degree=min(settings.sh_degree if settings.sh_degree is not None
                                            else g.sh_degree, g.sh_degree),
        packed=False, tile_size=settings.tile_size, backgrounds=bg.contiguous(),
        render_mode="RGB+ED", rasterize_mode="classic")
    depth = torch.where(alphas > 0, colors[..., 3:4], torch.zeros_like(alphas))
    return RenderOutput(colors[..., :3], alphas, depth, _projected(meta))


def _projected(meta: dict) -> Projected | None:
    """gsplat's per-camera 2D Gaussians as ``Projected`` (radii widened to [C, N, 2] for older
    gsplat versions that return one radius), or None when its meta lacks a field."""
    keys = ("means2d", "conics", "depths", "colors", "opacities", "radii")
    if not all(k in meta for k in keys):
        return None
    radii = meta["radii"]
    if radii.dim() == 2:
        radii = radii[..., None].expand(*radii.shape, 2)
    colors = meta["colors"][..., :3]
    opac = meta["opacities"]
    if opac.dim() == 1:
        opac = opac[None].expand(radii.shape[0], -1)
    return Projected(meta["means2d"], meta["conics"], meta["depths"], colors, opac,
                     radii.to(torch.int32))
