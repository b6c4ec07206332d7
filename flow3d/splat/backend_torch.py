"""The ``"torch"`` backend: the dense reference compositor (the slow twin of ``backend_cpu``).

Every visible Gaussian is evaluated at every pixel, fragments are sorted by depth and the
transmittance is a cumulative product, so the rules of ``flow3d.splat.render`` read directly
off the code. Plain torch autograd gives its gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flow3d.splat.cameras import Cameras
from flow3d.splat.project import Projected
from flow3d.splat.settings import RenderSettings


def pixel_centers(width: int, height: int, dtype=torch.float32) -> Tensor:
    """``[H, W, 2]`` (x, y) pixel centres at integer + 0.5."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype) + 0.5,
                            torch.arange(width, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def rasterize_dense(projected: Projected, cameras: Cameras, settings: RenderSettings,
                    pixel_chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """The reference compositor: every visible Gaussian against every pixel, sorted by depth,
    transmittance by a cumulative product. Memory ~ N x ``pixel_chunk`` per camera."""
    h, w = cameras.height, cameras.width
    dtype = projected.means2d.dtype
    pix = pixel_centers(w, h, dtype).reshape(-1, 2)  # [P, 2]
    bg = torch.tensor(settings.background, dtype=dtype)
    rgbs, alphas, depths = [], [], []
    for ci in range(len(cameras)):
        keep = (projected.radii[ci] > 0).all(-1)
        order = torch.argsort(projected.depths[ci][keep], stable=True)
        idx = keep.nonzero().flatten()[order]
        mean2d = projected.means2d[ci, idx]  # [M, 2]
        conic = projected.conics[ci, idx]
        color = projected.colors[ci, idx]
        opac = projected.opacities[ci, idx]
        z = projected.depths[ci, idx]
        out_rgb, out_a, out_d = [], [], []
        for start in range(0, pix.shape[0], pixel_chunk):
            p = pix[start:start + pixel_chunk]  # [P, 2]
            d = p[:, None, :] - mean2d[None]  # [P, M, 2]
            power = (0.5 * (conic[:, 0] * d[..., 0] ** 2 + conic[:, 2] * d[..., 1] ** 2)
                     + conic[:, 1] * d[..., 0] * d[..., 1])
            alpha = torch.clamp_max(opac * torch.exp(-power), settings.alpha_max)
            alpha = torch.where((power >= 0) & (alpha >= settings.alpha_min), alpha,
                                torch.zeros_like(alpha))
            one_minus = 1.0 - alpha
            t_excl = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]),
                                              one_minus[:, :-1]], dim=1), dim=1)
            with torch.no_grad():  # stop before the fragment that would end transmittance
                ends = (alpha > 0) & (t_excl * one_minus <= settings.transmittance_min)
                stopped = torch.cumsum(ends.to(torch.int32), dim=1) > 0
            weight = torch.where(stopped, torch.zeros_like(alpha), alpha * t_excl)  # [P, M]
            t_final = 1.0 - weight.sum(1, keepdim=True)
            rgb = weight @ color + t_final * bg
            acc = 1.0 - t_final
            depth = (weight @ z[:, None]) / acc.clamp_min(1e-10)
            depth = torch.where(acc > 0, depth, torch.zeros_like(depth))
            out_rgb.append(rgb)
            out_a.append(acc)
            out_d.append(depth)
        rgbs.append(torch.cat(out_rgb).reshape(h, w, 3))
        alphas.append(torch.cat(out_a).reshape(h, w, 1))
        depths.append(torch.cat(out_d).reshape(h, w, 1))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)
