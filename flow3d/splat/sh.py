"""Real spherical harmonics in the 3DGS convention (degree 0 to 3), and their rotation.

Colour of a Gaussian seen along unit direction ``d`` (from the camera centre to its mean):
``rgb = max(0, 0.5 + sum_k c_k Y_k(d))`` with ``c: [N, K, 3]``, ``K = (degree + 1)^2``, in the
basis order and with the constants of the INRIA 3DGS code and gsplat (``sh_to_rgb``), so PLY
files and renders agree with theirs. ``Y_0 = C0``: a DC coefficient ``f_dc`` gives colour
``0.5 + C0 * f_dc``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
MAX_DEGREE = 3


def num_coeffs(degree: int) -> int:
    return (degree + 1) ** 2


def degree_of(num: int) -> int:
    """The SH degree whose basis has ``num`` functions (1, 4, 9, 16), else ValueError."""
    degree = math.isqrt(num) - 1
    if degree < 0 or num_coeffs(degree) != num or degree > MAX_DEGREE:
        raise ValueError(f"{num} SH coefficients per channel: expected 1, 4, 9 or 16")
    return degree


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The basis ``Y_k(d)`` for unit ``dirs: [..., 3]`` -> ``[..., (degree + 1)^2]``."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz,
                C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def sh_to_rgb(coeffs: Tensor, dirs: Tensor, degree: int | None = None) -> Tensor:
    """Colours ``[..., 3]`` from ``coeffs: [..., K, 3]`` seen along ``dirs: [..., 3]`` (any
    length; normalised here), using the first ``degree`` bands (default: all of them)."""
    k = coeffs.shape[-2]
    degree = degree_of(k) if degree is None else min(degree, degree_of(k))
    n = num_coeffs(degree)
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, d)  # [..., n]
    rgb = (basis.unsqueeze(-1) * coeffs[..., :n, :]).sum(-2) + 0.5
    return rgb.clamp_min(0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """The DC coefficient that shows colour ``rgb`` (the inverse of degree 0)."""
    return (rgb - 0.5) / C0


def sh_rotation(rotation: Tensor, degree: int) -> Tensor:
    """Block-diagonal matrix ``M: [K, K]`` with ``coeffs' = M @ coeffs`` for a scene rotated by
    ``rotation: [3, 3]`` (``f'(d) = f(R^T d)``). Real SH of each band are closed under rotation,
    so ``M`` is found exactly by least squares on directions spread over the sphere."""
    k = num_coeffs(degree)
    dtype = torch.float64
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(4 * k + 16, 3, generator=g, dtype=dtype)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    r = rotation.to(dtype)
    y_new = sh_basis(degree, dirs)  # Y(d)
    y_old = sh_basis(degree, dirs @ r)  # Y(R^T d), rows d^T R = (R^T d)^T
    m = torch.linalg.lstsq(y_new, y_old).solution  # Y(d) M = Y(R^T d), so Y(d) (M c) = f(R^T d)
    # exactly block-diagonal by band; zero the round-off across bands
    mask = torch.zeros(k, k, dtype=torch.bool)
    for band in range(degree + 1):
        lo, hi = band * band, (band + 1) ** 2
        mask[lo:hi, lo:hi] = True
    return torch.where(mask, m, torch.zeros_like(m))
