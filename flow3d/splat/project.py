"""EWA projection of 3D Gaussians into pinhole cameras (Zwicker et al. 2002; 3DGS Sec. 4), with
gsplat's conventions: the Jacobian is taken at the mean with x/z and y/z clamped to 1.3 times
the half field of view, a 0.3-pixel low-pass (``eps2d``) is added to the 2D covariance, the
screen extent is 3 sigma per axis, and Gaussians nearer than ``near`` or farther than ``far``
are culled.

Plain differentiable torch: every rasterizer backend composites what this returns, so autograd
carries gradients from 2D back to means, quaternions, scales and SH colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.sh import sh_to_rgb


@dataclass(frozen=True)
class Projected:
    """Per camera and Gaussian, ``[C, N, ...]``: pixel centre ``means2d [.., 2]``, inverse 2D
    covariance ``conics [.., 3]`` (a, b, c of ``[[a, b], [b, c]]``), camera depth ``depths``,
    colour ``colors [.., 3]``, opacity ``opacities``, 3-sigma half extents ``radii [.., 2]``
    (int, 0 when culled)."""

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    colors: Tensor
    opacities: Tensor
    radii: Tensor


def project(gaussians: Gaussians, cameras: Cameras, *, near: float = 0.01, far: float = 1e10,
            eps2d: float = 0.3, sh_degree: int | None = None) -> Projected:
    dtype = gaussians.dtype
    viewmats = cameras.viewmats.to(dtype)  # [C, 4, 4]
    K = cameras.K.to(dtype)  # [C, 3, 3]
    r, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", r, gaussians.means) + t[:, None]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    valid = (z > near) & (z < far)
    z_safe = torch.where(valid, z, torch.ones_like(z))

    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    # clamp the Jacobian's point to 1.3x the field of view (far off-screen Gaussians)
    lim_x_pos = (cameras.width - cx) / fx * 1.3 + 0.0
    lim_x_neg = cx / fx * 1.3
    lim_y_pos = (cameras.height - cy) / fy * 1.3
    lim_y_neg = cy / fy * 1.3
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    zeros = torch.zeros_like(z_safe)
    jac = torch.stack([fx / z_safe, zeros, -fx * tx / z_safe ** 2,
                       zeros, fy / z_safe, -fy * ty / z_safe ** 2], dim=-1).reshape(
        *z.shape, 2, 3)  # [C, N, 2, 3]
    cov_w = gaussians.covariances()  # [N, 3, 3]
    cov_c = r[:, None] @ cov_w[None] @ r[:, None].transpose(-1, -2)  # [C, N, 3, 3]
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C, N, 2, 2]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    u = fx * x / z_safe + cx
    v = fy * y / z_safe + cy
    means2d = torch.stack([u, v], dim=-1)
    with torch.no_grad():
        radii = torch.stack([torch.ceil(3.0 * a.clamp_min(0).sqrt()),
                             torch.ceil(3.0 * c.clamp_min(0).sqrt())], dim=-1)
        on_screen = ((u + radii[..., 0] > 0) & (u - radii[..., 0] < cameras.width)
                     & (v + radii[..., 1] > 0) & (v - radii[..., 1] < cameras.height))
        valid = valid & on_screen
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    centers = cameras.centers.to(dtype)  # [C, 3]
    dirs = gaussians.means[None] - centers[:, None]  # [C, N, 3]
    colors = sh_to_rgb(gaussians.sh[None].expand(len(cameras), -1, -1, -1), dirs, sh_degree)
    opacities = gaussians.opacities[None].expand(len(cameras), -1)
    return Projected(means2d, conics, torch.where(valid, z, torch.zeros_like(z)), colors,
                     opacities, radii)
