"""Camera ray maps: Plücker rays from :class:`Cameras`, and cameras back from (noisy) rays.

SplatFlow (Go et al., CVPR 2025) generates, with each view's latent, a ray map that stands for
the view's camera; to use the generated cameras they are read back from the rays, and the
"stop-ray" step replaces generated rays by those of the nearest consistent camera
(:func:`snap_rays`). Ray maps here follow Plücker's representation, as in Cameras as Rays
(Zhang et al., ICLR 2024).

Conventions (those of :mod:`flow3d.splat.cameras`):

- OpenCV camera axes (x right, y down, z forward); ``K`` in pixels with pixel centres at
  integer + 1/2; world-to-camera ``viewmats = [R | t]``; camera centre ``o = -R^T t``.
- A ray map ``rays [C, 6, h, w]`` samples an ``h x w`` grid of cells covering the ``W x H``
  image: cell ``(i, j)`` has its centre at pixel coordinates
  ``u_j = (j + 1/2) W / w``, ``v_i = (i + 1/2) H / h`` (for ``w = W`` the pixel centres).
- Channels ``0:3`` are the unit world direction ``d ∝ R^T K^-1 q`` of the ray through
  ``q = (u, v, 1)``, channels ``3:6`` its moment ``m = o x d``. A Plücker line is homogeneous
  (``(s d, s m)`` is the same line), so fitting first divides both by ``|d|``.

Fitting (:func:`cameras_from_rays`), per camera, in float64, each step linear least squares
over the rays (weighted by an optional mask):

1. centre: ``p`` lies on the line ``(d, m)`` iff ``p x d = m``, i.e. ``(I - d d^T) p = d x m``;
   the normal equations ``sum w (I - d d^T) p = sum w d x m`` give the point closest to all
   the lines. The 3x3 matrix is singular exactly when all rays are parallel.
2. ``M = R^T K^-1`` (up to scale) by the normalised direct linear transform (Hartley and
   Zisserman 2004, Alg. 4.2): directions are rotated so their mean is ``+z`` and divided by
   their ``z`` (points of a plane), pixels and those points are each moved to zero mean and
   RMS radius sqrt(2), and ``p x H q = 0`` (two equations per ray, linear in the 9 entries
   of ``H``) is solved by the smallest right singular vector; the normalisations are then
   undone. The sign of ``M`` is the one that makes ``M q`` point along the rays.
3. ``M^-1 = K R`` by RQ decomposition with ``K``'s diagonal positive, so ``det R = +1`` for any
   ray field of a real (not mirrored) camera; ``K`` is scaled to ``K[2, 2] = 1``, its skew
   set to 0, and by default ``fx = fy`` (their mean).
4. optionally, with the principal point known (generated views have it at the image centre),
   ``R`` and the focal length are refitted by Kabsch (1976): a free principal point and a
   small rotation move the rays almost alike when the field of view is narrow, so fixing it
   cuts the rotation error on noisy rays several-fold. The centre is then solved again with
   the fitted directions in place of the given ones, whose noise biases step 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.core import so3
from flow3d.splat.cameras import Cameras

__all__ = [
    "Similarity",
    "align_similarity",
    "cameras_from_rays",
    "center_errors",
    "plucker_rays",
    "pose_errors",
    "ray_directions",
    "relative_rotation_errors_deg",
    "rotation_errors_deg",
    "scene_scale",
    "snap_rays",
]

# The fit refuses ray fields that do not determine a camera, rather than return garbage:
_MIN_SPREAD = 1e-8  # smallest eigenvalue of mean(I - d d^T): RMS angle ~1e-4 rad to a line
_MIN_DLT_GAP = 1e-8  # second-smallest / largest singular value of the DLT system
_MIN_DEPTH = 1e-2  # every ray within ~89.4 deg of the mean direction (a pinhole's rays are)


# ---- cameras -> rays ---------------------------------------------------------------------
def _grid_shape(grid: int | tuple[int, int] | None, width: int, height: int) -> tuple[int, int]:
    if grid is None:
        return int(height), int(width)
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if not (isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1):
        raise ValueError(f"plucker_rays: grid {grid!r} must be a positive int, a pair "
                         "(rows, cols) of them, or None (one ray per pixel)")
    return h, w


def _cell_centres(width: int, height: int, h: int, w: int, device) -> Tensor:
    """Homogeneous pixel coordinates ``q = (u, v, 1)`` of the cell centres: ``[h, w, 3]``."""
    u = (torch.arange(w, dtype=torch.float64, device=device) + 0.5) * (width / w)
    v = (torch.arange(h, dtype=torch.float64, device=device) + 0.5) * (height / h)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)


def _directions(K: Tensor, R: Tensor, q: Tensor) -> Tensor:
    """Unit world directions ``R^T K^-1 q / |.|`` ``[C, ..., 3]`` of pixels ``q [..., 3]``."""
    d = torch.einsum("cij,...j->c...i", R.transpose(-1, -2) @ torch.linalg.inv(K), q)
    return d / d.norm(dim=-1, keepdim=True)


def _rays(K: Tensor, R: Tensor, o: Tensor, q: Tensor) -> Tensor:
    """Plücker rays ``[C, 6, h, w]`` (float64) of cameras ``K, R [C, 3, 3]``, ``o [C, 3]``
    through the pixels ``q [h, w, 3]``: ``d = R^T K^-1 q / |.|``, ``m = o x d``."""
    d = _directions(K, R, q)  # [C, h, w, 3]
    m = torch.linalg.cross(o[:, None, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, m], dim=-1).permute(0, 3, 1, 2)


def ray_directions(cameras: Cameras) -> Tensor:
    """Unit world directions ``[C, H, W, 3]`` (float64) through every pixel centre."""
    q = _cell_centres(cameras.width, cameras.height, cameras.height, cameras.width,
                      cameras.K.device)
    return _directions(cameras.K.to(torch.float64),
                       cameras.viewmats[:, :3, :3].to(torch.float64), q)


def plucker_rays(cameras: Cameras, grid: int | tuple[int, int] | None = None) -> Tensor:
    """Plücker ray maps ``[C, 6, h, w]`` (float32; computed in float64) of ``cameras``.

    ``grid``: ``None`` for one ray per pixel (``h, w = height, width``), ``s`` for ``s x s``
    cells, or ``(h, w)``; each ray passes through its cell's centre (module docstring).
    """
    h, w = _grid_shape(grid, cameras.width, cameras.height)
    vm = cameras.viewmats.to(torch.float64)
    R, t = vm[:, :3, :3], vm[:, :3, 3]
    o = -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
    q = _cell_centres(cameras.width, cameras.height, h, w, vm.device)
    return _rays(cameras.K.to(torch.float64), R, o, q).float()


# ---- rays -> cameras ---------------------------------------------------------------------
def _first_bad(bad: Tensor) -> int:
    """Index of the first camera flagged in ``bad [C]``, for error messages."""
    return int(bad.nonzero()[0, 0])


def _check_inputs(rays: Tensor, width: int, height: int, weights: Tensor | None,
                  principal_point: tuple[float, float] | None) -> Tensor:
    """Validate the arguments of the fit; return the weights ``[C, N]`` (float64)."""
    if rays.ndim != 4 or rays.shape[1] != 6:
        raise ValueError(f"cameras_from_rays: rays must be [C, 6, h, w] (direction, moment), "
                         f"got {tuple(rays.shape)}")
    if not torch.isfinite(rays).all():
        raise ValueError("cameras_from_rays: rays contain NaN or inf")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"cameras_from_rays: image size {width}x{height} must be positive")
    if principal_point is not None and (
            len(principal_point) != 2 or not all(map(math.isfinite, principal_point))):
        raise ValueError(f"cameras_from_rays: principal_point {principal_point!r} must be "
                         "two finite numbers (cx, cy) in pixels, or None")
    c, _, h, w = rays.shape
    if weights is None:
        weights = torch.ones(c, h, w, dtype=torch.float64, device=rays.device)
    if weights.shape != (c, h, w):
        raise ValueError(f"cameras_from_rays: weights must be [C, h, w] = {[c, h, w]} to match "
                         f"the rays, got {list(weights.shape)}")
    wt = weights.to(rays.device, torch.float64).reshape(c, h * w)
    if not torch.isfinite(wt).all() or (wt < 0).any():
        raise ValueError("cameras_from_rays: weights must be finite and non-negative")
    count = (wt > 0).sum(-1)
    if (count < 4).any():
        i = _first_bad(count < 4)
        raise ValueError(f"cameras_from_rays: camera {i} has {int(count[i])} rays with positive "
                         "weight; at least 4 rays, not all through one line of the image, are "
                         "needed to determine a camera (a 1x1 grid cannot)")
    return wt


def _fit_centres(d: Tensor, m: Tensor, wt: Tensor) -> Tensor:
    """Least-squares common point ``[C, 3]`` of lines ``d, m [C, N, 3]`` (``|d| = 1``):
    ``sum w (I - d d^T) p = sum w d x m``."""
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    A = torch.einsum("cn,cni,cnj->cij", wt, d, d)
    A = eye * wt.sum(-1)[:, None, None] - A
    b = torch.einsum("cn,cni->ci", wt, torch.linalg.cross(d, m, dim=-1))
    spread = torch.linalg.eigvalsh(A)[:, 0] / wt.sum(-1)
    if (spread < _MIN_SPREAD).any():
        i = _first_bad(spread < _MIN_SPREAD)
        raise ValueError(f"cameras_from_rays: the rays of camera {i} are (nearly) parallel "
                         f"(spread {spread[i].item():.1e} < {_MIN_SPREAD:.0e}), so their "
                         "common point, the camera centre, is not determined")
    return torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)


def _hartley(x: Tensor, wt: Tensor) -> Tensor:
    """Similarity ``T [C, 3, 3]`` moving 2D points ``x [C, N, 2]`` to weighted zero mean and
    RMS radius sqrt(2) (Hartley 1997)."""
    wsum = wt.sum(-1, keepdim=True)  # [C, 1]
    mean = (wt[..., None] * x).sum(1) / wsum  # [C, 2]
    rms = ((wt * ((x - mean[:, None]) ** 2).sum(-1)).sum(-1, keepdim=True) / wsum).sqrt()
    s = math.sqrt(2.0) / rms.clamp_min(1e-300)  # [C, 1]
    T = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    T[:, 0, 0], T[:, 1, 1], T[:, 2, 2] = s[:, 0], s[:, 0], 1.0
    T[:, :2, 2] = -s * mean
    return T


def _to_plus_z(n: Tensor) -> Tensor:
    """Orthogonal ``Q [C, 3, 3]`` with ``Q n = +z`` for unit ``n [C, 3]``: the Householder
    reflection along ``v = n - z``, or minus the one along ``v = n + z``, whichever ``v`` is
    the longer (never shorter than sqrt(2), so the division is safe)."""
    s = torch.where(n[:, 2] >= 0, 1.0, -1.0).to(n.dtype)  # [C]
    v = n.clone()
    v[:, 2] += s
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    H = eye - 2.0 * v[:, :, None] * v[:, None, :] / (v * v).sum(-1)[:, None, None]
    return -s[:, None, None] * H


def _fit_projection(d: Tensor, q: Tensor, wt: Tensor) -> Tensor:
    """``M [C, 3, 3]`` with ``d ∝ M q`` (positive factor) by the normalised DLT, from unit
    directions ``d [C, N, 3]``, pixels ``q [N, 3]`` and weights ``wt [C, N]``."""
    c, n = wt.shape
    Q = _to_plus_z(torch.nn.functional.normalize((wt[..., None] * d).sum(1), dim=-1))
    a = torch.einsum("cij,cnj->cni", Q, d)  # mean direction now +z
    if ((a[..., 2] < _MIN_DEPTH) & (wt > 0)).any():
        i = _first_bad(((a[..., 2] < _MIN_DEPTH) & (wt > 0)).any(-1))
        raise ValueError(f"cameras_from_rays: the rays of camera {i} spread over more than a "
                         "hemisphere, which no pinhole camera's rays do")
    p = a / a[..., 2:].clamp_min(_MIN_DEPTH)  # [C, N, 3]: points (x, y, 1) of the plane z = 1
    qc = q.expand(c, n, 3)
    Tp, Tq = _hartley(p[..., :2], wt), _hartley(qc[..., :2], wt)
    pn, qn = p @ Tp.transpose(-1, -2), qc @ Tq.transpose(-1, -2)  # [C, N, 3], last entry 1
    # p x (H q) = 0: rows [0, -q, y q] and [q, 0, -x q] over vec(H) (row-major)
    zero = torch.zeros_like(qn)
    r1 = torch.cat([zero, -qn, pn[..., 1:2] * qn], dim=-1)
    r2 = torch.cat([qn, zero, -pn[..., 0:1] * qn], dim=-1)
    A = torch.cat([r1, r2], dim=1) * wt.repeat(1, 2).sqrt()[..., None]  # [C, 2N, 9]
    A = torch.nn.functional.pad(A, (0, 0, 0, max(0, 9 - 2 * n)))  # >= 9 rows: Vh is 9 x 9
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    gap = S[:, -2] / S[:, 0]
    if (gap < _MIN_DLT_GAP).any():
        i = _first_bad(gap < _MIN_DLT_GAP)
        raise ValueError(f"cameras_from_rays: the rays of camera {i} do not determine its "
                         "rotation and intrinsics (too few weighted cells, or all on one "
                         "line of the image)")
    Hn = Vh[:, -1].reshape(c, 3, 3)
    M = Q.transpose(-1, -2) @ torch.linalg.inv(Tp) @ Hn @ Tq
    forward = torch.einsum("cni,cij,nj,cn->c", d, M, q, wt)  # sum w d . M q
    M = M * torch.where(forward < 0, -1.0, 1.0).to(M.dtype)[:, None, None]
    if (torch.linalg.det(M) <= 0).any():
        i = _first_bad(torch.linalg.det(M) <= 0)
        raise ValueError(f"cameras_from_rays: the rays of camera {i} are mirrored (left-handed); "
                         "no camera with det R = +1 produces them")
    return M


def _rq(A: Tensor) -> tuple[Tensor, Tensor]:
    """``A = K R`` [C, 3, 3]: ``K`` upper triangular with a positive diagonal, ``R``
    orthogonal. With ``P`` the row reversal and ``(P A)^T = Q' R'`` (QR),
    ``A = (P R'^T P)(P Q'^T)``; then signs move from ``K``'s columns to ``R``'s rows."""
    P = torch.eye(3, dtype=A.dtype, device=A.device).flip(0)
    Qt, Rt = torch.linalg.qr((P @ A).transpose(-1, -2))
    K, R = P @ Rt.transpose(-1, -2) @ P, P @ Qt.transpose(-1, -2)
    D = torch.diag_embed(torch.sign(torch.diagonal(K, dim1=-2, dim2=-1)))
    return K @ D, D @ R


def _kabsch(c: Tensor, d: Tensor, wt: Tensor) -> Tensor:
    """The rotation ``R [C, 3, 3]`` minimising ``sum w |c - R d|^2`` (Kabsch 1976): with
    ``sum w c d^T = U S V^T``, ``R = U diag(1, 1, det(U V^T)) V^T``."""
    U, _, Vh = torch.linalg.svd(torch.einsum("cn,cni,cnj->cij", wt, c, d))
    S = torch.ones_like(U[:, 0])
    S[:, 2] = torch.sign(torch.linalg.det(U @ Vh))
    return U @ torch.diag_embed(S) @ Vh


def _refit_with_principal_point(d: Tensor, q: Tensor, wt: Tensor, K: Tensor,
                                square_pixels: bool) -> tuple[Tensor, Tensor]:
    """``K, R`` refitted with ``K``'s principal point held: alternately ``R`` by Kabsch between
    the rays ``d`` and the pixel directions ``c ∝ K^-1 q``, and the focal lengths by least
    squares of ``(u - cx, v - cy) / f = e_xy / e_z`` with ``e = R d``. With the principal point
    fixed, focal length and rotation hardly interact: this converges in a few rounds."""
    xy = q[None, :, :2] - K[:, None, :2, 2]  # [C, N, 2]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)  # [C, 2]

    def rotation(f: Tensor) -> Tensor:
        c = torch.cat([xy / f[:, None], torch.ones_like(xy[..., :1])], dim=-1)
        return _kabsch(torch.nn.functional.normalize(c, dim=-1), d, wt)

    for _ in range(100):  # until the focal lengths settle
        e = torch.einsum("cij,cnj->cni", rotation(f), d)
        tangent = e[..., :2] / e[..., 2:].clamp_min(_MIN_DEPTH)  # [C, N, 2]
        num = (wt[..., None] * xy * xy).sum(1)
        den = (wt[..., None] * xy * tangent).sum(1)
        f_new = num.sum(-1, keepdim=True).expand(-1, 2) / den.sum(-1, keepdim=True) \
            if square_pixels else num / den
        # rays that anti-correlate with their pixels (incoherent, generated) would flip the
        # focal length: keep the last positive one, the best camera for such rays
        f_new = torch.where(torch.isfinite(f_new) & (f_new > 0), f_new, f)
        done = bool(((f_new - f).abs() <= 1e-12 * f.abs()).all())
        f = f_new
        if done:
            break
    K = K.clone()
    K[:, 0, 0], K[:, 1, 1] = f[:, 0], f[:, 1]
    return K, rotation(f)


def _focal_guess(d: Tensor, q: Tensor, wt: Tensor, principal_point) -> Tensor:
    """``K [C, 3, 3]`` with the given principal point and the focal length ``f`` that best
    explains the rays' angles to their mean direction: ``median |q - c| / tan(angle)`` over
    rays off the axis (a pinhole centred on the mean direction has ``|q - c| = f tan``)."""
    n = torch.nn.functional.normalize((wt[..., None] * d).sum(1), dim=-1)  # [C, 3]
    cos = torch.einsum("cni,ci->cn", d, n).clamp(-1.0, 1.0)
    ang = torch.arccos(cos)
    c = torch.tensor(principal_point, dtype=d.dtype, device=d.device)
    r = (q[:, :2] - c).norm(dim=-1).expand_as(ang)
    ok = (ang > 1e-3) & (ang < math.radians(80)) & (wt > 0) & (r > 0)
    ratio = torch.where(ok, r / torch.tan(ang).clamp_min(1e-9), torch.nan)
    f = torch.nanmedian(ratio, dim=-1).values
    if not torch.isfinite(f).all():
        i = _first_bad(~torch.isfinite(f))
        raise ValueError(f"cameras_from_rays: the rays of camera {i} do not spread around an "
                         "axis, so no focal length explains them")
    K = torch.zeros(len(f), 3, 3, dtype=d.dtype, device=d.device)
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = f, f, 1.0
    K[:, 0, 2], K[:, 1, 2] = c[0], c[1]
    return K


def _fit(rays: Tensor, width: int, height: int, weights: Tensor | None, square_pixels: bool,
         principal_point: tuple[float, float] | None) -> tuple[Tensor, Tensor, Tensor]:
    """``K, R [C, 3, 3]`` and centres ``o [C, 3]`` (float64) fitted to ``rays``."""
    wt = _check_inputs(rays, width, height, weights, principal_point)
    c, _, h, w = rays.shape
    x = rays.to(torch.float64).permute(0, 2, 3, 1).reshape(c, h * w, 6)
    norm = x[..., :3].norm(dim=-1, keepdim=True)
    if ((norm[..., 0] < 1e-12) & (wt > 0)).any():
        raise ValueError("cameras_from_rays: a ray with positive weight has a zero direction")
    x = x / norm.clamp_min(1e-12)  # homogeneous Plücker line: unit direction
    d, m = x[..., :3], x[..., 3:]
    o = _fit_centres(d, m, wt)
    q = _cell_centres(width, height, h, w, rays.device).reshape(h * w, 3)
    if principal_point is not None:
        # no DLT: start the Kabsch refit from a focal length read off the ray spread, which
        # copes with generated rays too incoherent for a projective fit
        K = _focal_guess(d, q, wt, principal_point)
        K, R = _refit_with_principal_point(d, q, wt, K, square_pixels)
        return K, R, _fit_centres(_directions(K, R, q), m, wt)
    M = _fit_projection(d, q, wt)
    K, R = _rq(torch.linalg.inv(M))
    K = K / K[:, 2:, 2:]
    K[:, 0, 1] = 0.0  # no skew
    if square_pixels:
        f = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
        K[:, 0, 0], K[:, 1, 1] = f, f
    return K, R, o


def cameras_from_rays(rays: Tensor, width: int, height: int, *, weights: Tensor | None = None,
                      square_pixels: bool = True,
                      principal_point: tuple[float, float] | None = None) -> Cameras:
    """The least-squares cameras (module docstring) of ray maps ``rays [C, 6, h, w]`` of
    ``width x height`` images; ``weights [C, h, w]`` (e.g. a mask) weight each ray's equations.

    ``square_pixels`` constrains ``fx = fy`` (set it False to fit both). ``principal_point``
    ``(cx, cy)`` in pixels, when known (e.g. ``(width / 2, height / 2)`` for generated views),
    is held fixed and the rotation and focal length refitted by Kabsch: far more robust to
    noise for narrow fields of view, where a shift of the principal point and a rotation
    change the rays almost alike. Raises ``ValueError`` when the rays cannot determine a camera
    (fewer than 4 weighted rays, all parallel, all through one image line, or mirrored) rather
    than return garbage.
    """
    K, R, o = _fit(rays, width, height, weights, square_pixels, principal_point)
    viewmats = torch.eye(4, dtype=torch.float64, device=rays.device).repeat(len(K), 1, 1)
    viewmats[:, :3, :3] = R
    viewmats[:, :3, 3] = -(R @ o.unsqueeze(-1)).squeeze(-1)
    return Cameras(K.float(), viewmats.float(), int(width), int(height))


def snap_rays(rays: Tensor, width: int, height: int, *, weights: Tensor | None = None,
              square_pixels: bool = True,
              principal_point: tuple[float, float] | None = None) -> Tensor:
    """SplatFlow's stop-ray: ``rays [C, 6, h, w]`` replaced by the rays of the cameras fitted to
    them (:func:`cameras_from_rays`, same keywords), in ``rays.dtype``; idempotent up to
    rounding."""
    K, R, o = _fit(rays, width, height, weights, square_pixels, principal_point)
    q = _cell_centres(width, height, rays.shape[2], rays.shape[3], rays.device)
    return _rays(K, R, o, q).to(rays.dtype)


# ---- pose metrics ------------------------------------------------------------------------
def _check_pair(pred: Cameras, true: Cameras) -> None:
    if len(pred) != len(true):
        raise ValueError(f"pose metrics: {len(pred)} predicted cameras but {len(true)} true ones")


def rotation_errors_deg(pred: Cameras, true: Cameras) -> Tensor:
    """Geodesic angle (degrees) between world-to-camera rotations, ``[C]`` float64:
    the angle of ``R_pred R_true^T``."""
    _check_pair(pred, true)
    Rp = pred.viewmats[:, :3, :3].to(torch.float64)
    Rt = true.viewmats[:, :3, :3].to(Rp.device, torch.float64)
    return _angle_between_deg(Rp, Rt)


def _angle_between_deg(a: Tensor, b: Tensor) -> Tensor:
    """Geodesic angle (degrees) of ``a b^T`` for rotations ``a, b [..., 3, 3]``."""
    return torch.rad2deg(so3.quat_angle(so3.rotmat_to_quat(a @ b.transpose(-1, -2))))


def relative_rotation_errors_deg(pred: Cameras, true: Cameras) -> Tensor:
    """Geodesic angle (degrees) between the predicted and true *relative* rotations of every
    pair of cameras ``i < j`` (``R_i R_j^T``), ``[C (C - 1) / 2]`` float64: pose up to a
    global rotation, the rotation accuracy of RelPose++ and Ray Diffusion."""
    _check_pair(pred, true)
    Rp = pred.viewmats[:, :3, :3].to(torch.float64)
    Rt = true.viewmats[:, :3, :3].to(Rp.device, torch.float64)
    i, j = torch.triu_indices(len(Rp), len(Rp), offset=1)
    return _angle_between_deg(Rp[i] @ Rp[j].transpose(-1, -2), Rt[i] @ Rt[j].transpose(-1, -2))


def scene_scale(cameras: Cameras) -> float:
    """Distance from the centroid of the camera centres to the farthest one (the scale of
    RelPose++'s and Ray Diffusion's camera-centre accuracy)."""
    c = cameras.to(torch.float64).centers
    return float((c - c.mean(0)).norm(dim=-1).max())


def center_errors(pred: Cameras, true: Cameras, scale: float = 1.0) -> Tensor:
    """Distances between camera centres divided by ``scale``, ``[C]`` float64."""
    _check_pair(pred, true)
    op = pred.to(torch.float64).centers
    return (op - true.to(op.device, torch.float64).centers).norm(dim=-1) / scale


@dataclass(frozen=True)
class Similarity:
    """The map ``x -> scale * rotation @ x + translation`` of world points."""

    rotation: Tensor  # [3, 3]
    translation: Tensor  # [3]
    scale: float

    def apply(self, points: Tensor) -> Tensor:  # [..., 3]
        return self.scale * points @ self.rotation.T + self.translation

    def apply_to_cameras(self, cameras: Cameras) -> Cameras:
        """The cameras moved with the world (float64): centre ``o -> apply(o)``, world-to-camera
        rotation ``R_c -> R_c rotation^T``; what each camera sees is unchanged up to scale."""
        cams = cameras.to(self.rotation.device, torch.float64)
        Rc = cams.viewmats[:, :3, :3] @ self.rotation.T
        viewmats = cams.viewmats.clone()
        viewmats[:, :3, :3] = Rc
        viewmats[:, :3, 3] = -(Rc @ self.apply(cams.centers).unsqueeze(-1)).squeeze(-1)
        return Cameras(cams.K, viewmats, cams.width, cams.height)


def align_similarity(pred_centers: Tensor, true_centers: Tensor) -> Similarity:
    """The similarity minimising ``sum |true - (s R pred + t)|^2`` (Umeyama 1991), float64.

    With ``S = cov(true, pred) = U D V^T``: ``R = U diag(1, 1, det(U V^T)) V^T``,
    ``s = tr(D diag(1, 1, det(U V^T))) / var(pred)``, ``t = mean(true) - s R mean(pred)``.
    The rotation is determined only by at least 3 centres not on one line.
    """
    if pred_centers.ndim != 2 or pred_centers.shape[-1] != 3 or \
            pred_centers.shape != true_centers.shape:
        raise ValueError(f"align_similarity: centres must both be [C, 3], got "
                         f"{tuple(pred_centers.shape)} and {tuple(true_centers.shape)}")
    x = pred_centers.to(torch.float64)
    y = true_centers.to(x.device, torch.float64)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    sv = torch.linalg.svdvals(xc)
    if len(x) < 3 or sv[1] <= 1e-6 * sv[0]:
        raise ValueError(f"align_similarity: the {len(x)} predicted centres are coincident or "
                         "on one line, so the aligning rotation is not determined")
    U, D, Vh = torch.linalg.svd(yc.T @ xc / len(x))
    S = torch.ones(3, dtype=x.dtype, device=x.device)
    S[2] = torch.sign(torch.linalg.det(U @ Vh))
    R = U @ torch.diag(S) @ Vh
    s = float((D * S).sum() / (xc**2).sum(-1).mean())
    return Similarity(R, my - s * R @ mx, s)


def pose_errors(pred: Cameras, true: Cameras, *, align: bool,
                scale: float = 1.0) -> dict[str, Tensor]:
    """Per-camera ``{"rotation_deg": [C], "center": [C]}`` (see :func:`rotation_errors_deg`,
    :func:`center_errors`). With ``align``, ``pred`` is first moved by the similarity that best
    aligns its centres to ``true``'s (:func:`align_similarity`): pose up to a global frame."""
    _check_pair(pred, true)
    if align:
        sim = align_similarity(pred.to(torch.float64).centers, true.to(torch.float64).centers)
        pred = sim.apply_to_cameras(pred)
    return {"rotation_deg": rotation_errors_deg(pred, true),
            "center": center_errors(pred, true, scale)}
