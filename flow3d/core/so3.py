"""Rotations in 3D: unit quaternions, rotation matrices and rotation vectors (axis-angle).

Conventions (all functions, any leading shape ``[...]``):

- quaternions are ``(w, x, y, z)`` with the scalar first, ``q: [..., 4]``; ``q`` and ``-q``
  are the same rotation, and functions that must choose (``quat_log``, ``rotmat_to_quat``)
  return the representative with ``w >= 0`` (the shortest path);
- a rotation vector ``v: [..., 3]`` is ``angle * axis`` (radians), the Lie algebra so(3);
- ``quat_exp(v)`` is the rotation by ``|v|`` about ``v / |v|``; ``quat_log`` is its inverse
  with ``|angle| <= pi``;
- composition is ``quat_mul(p, q)`` = "first q, then p" (``R(p q) = R(p) R(q)``), so
  ``q * exp(u)`` moves ``q`` along the body-frame tangent ``u``.

Numerics: every ``sin(x)/x``-like ratio switches to its Taylor series near 0, square roots
are taken of safe arguments so that gradients stay finite at the identity (checked by
gradcheck in float64), and rotations near pi go through the largest quaternion component
(Shepperd's choice) so that nothing divides by ``sin(pi)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_rotmat",
    "hat",
    "quat_angle",
    "quat_apply",
    "quat_canonical",
    "quat_conj",
    "quat_exp",
    "quat_inv",
    "quat_log",
    "quat_mul",
    "quat_normalize",
    "quat_slerp",
    "quat_to_rotmat",
    "random_quat",
    "rotmat_to_axis_angle",
    "rotmat_to_quat",
    "so3_jr_inv",
]

# Below these squared magnitudes the Taylor branch is used; the truncation error there is far
# below float64 resolution (terms of order x^6 ~ 1e-18 relative).
_SMALL_ANGLE2 = 1e-6


def _check_last(x: Tensor, n: int, name: str) -> None:
    if x.shape[-1:] != (n,):
        raise ValueError(f"{name} must have last dimension {n}, got shape {tuple(x.shape)}")


def quat_mul(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product ``p q`` (rotate by ``q`` first, then by ``p``); broadcasts."""
    _check_last(p, 4, "p")
    _check_last(q, 4, "q")
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        (
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ),
        dim=-1,
    )


def quat_conj(q: Tensor) -> Tensor:
    """Conjugate ``(w, -x, -y, -z)``; the inverse rotation for a unit quaternion."""
    _check_last(q, 4, "q")
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_inv(q: Tensor) -> Tensor:
    """Multiplicative inverse ``conj(q) / |q|^2`` (works for non-unit quaternions)."""
    return quat_conj(q) / (q * q).sum(-1, keepdim=True)


def quat_normalize(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale to unit norm (``eps`` guards the zero quaternion)."""
    _check_last(q, 4, "q")
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_canonical(q: Tensor) -> Tensor:
    """The representative of ``{q, -q}`` with ``w >= 0``."""
    _check_last(q, 4, "q")
    return torch.where(q[..., :1] < 0, -q, q)


def _sinc_half(theta2: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos(theta/2), sin(theta/2)/theta)`` from ``theta^2``, smooth at ``theta = 0``."""
    small = theta2 < _SMALL_ANGLE2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half = 0.5 * theta
    cos_big = torch.cos(half)
    sinc_big = torch.sin(half) / theta
    # cos(x/2) = 1 - x^2/8 + x^4/384 ; sin(x/2)/x = 1/2 - x^2/48 + x^4/3840
    cos_small = 1.0 - theta2 / 8.0 + theta2 * theta2 / 384.0
    sinc_small = 0.5 - theta2 / 48.0 + theta2 * theta2 / 3840.0
    return torch.where(small, cos_small, cos_big), torch.where(small, sinc_small, sinc_big)


def quat_exp(v: Tensor) -> Tensor:
    """Rotation vector ``v: [..., 3]`` -> unit quaternion ``[..., 4]``.

    ``exp(v) = (cos(|v|/2), sin(|v|/2) v/|v|)``; exact at ``v = 0`` (series branch).
    """
    _check_last(v, 3, "rotation vector")
    theta2 = (v * v).sum(-1)  # [...]
    c, s = _sinc_half(theta2)
    return torch.cat((c.unsqueeze(-1), s.unsqueeze(-1) * v), dim=-1)


def quat_log(q: Tensor) -> Tensor:
    """Unit quaternion ``[..., 4]`` -> rotation vector ``[..., 3]`` with angle in ``[0, pi]``.

    ``q`` is first normalised and made canonical (``w >= 0``), so ``q`` and ``-q`` give the
    same (shortest) rotation vector. ``log(q) = 2 atan2(|u|, w) u/|u|`` with ``u = (x, y, z)``;
    near the identity ``atan2(s, w)/s = (1 - r^2/3 + r^4/5)/w`` with ``r = s/w``.
    """
    q = quat_canonical(quat_normalize(q))
    w = q[..., 0]  # [...]  in [0, 1]
    u = q[..., 1:]  # [..., 3]
    s2 = (u * u).sum(-1)
    small = s2 < _SMALL_ANGLE2  # then w > 0.99
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    big = torch.atan2(s, w) / s
    w_safe = torch.where(small, w, torch.ones_like(w))
    r2 = s2 / (w_safe * w_safe)
    series = (1.0 - r2 / 3.0 + r2 * r2 / 5.0) / w_safe
    return (2.0 * torch.where(small, series, big)).unsqueeze(-1) * u


def quat_angle(q: Tensor) -> Tensor:
    """Rotation angle in ``[0, pi]`` of ``q`` (shortest); ``quat_angle(quat_inv(p) q)`` is
    the geodesic distance on SO(3)."""
    q = quat_canonical(quat_normalize(q))
    return 2.0 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0])


def quat_apply(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v: [..., 3]`` by unit quaternions ``q: [..., 4]`` (broadcast).

    ``v' = v + 2 w (u x v) + 2 u x (u x v)``: the sandwich ``q v q*`` without building it.
    """
    _check_last(q, 4, "q")
    _check_last(v, 3, "v")
    w = q[..., :1]
    u = q[..., 1:]
    u, v = torch.broadcast_tensors(u, v)
    uv = torch.linalg.cross(u, v, dim=-1)
    return v + 2.0 * (w * uv + torch.linalg.cross(u, uv, dim=-1))


def quat_to_rotmat(q: Tensor) -> Tensor:
    """Quaternion ``[..., 4]`` (any non-zero norm) -> rotation matrix ``[..., 3, 3]``."""
    _check_last(q, 4, "q")
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    xx, yy, zz = x * x * s, y * y * s, z * z * s
    xy, xz, yz = x * y * s, x * z * s, y * z * s
    wx, wy, wz = w * x * s, w * y * s, w * z * s
    rows = (
        1.0 - yy - zz, xy - wz, xz + wy,
        xy + wz, 1.0 - xx - zz, yz - wx,
        xz - wy, yz + wx, 1.0 - xx - yy,
    )  # fmt: skip
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> canonical unit quaternion ``[..., 4]`` (``w >= 0``).

    Shepperd's method: of the four quantities ``4 q_i^2`` (from the trace and the diagonal),
    use the largest one (it is always ``>= 1``) as the divisor, so the result is accurate for
    every angle including pi, and gradients stay finite.
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape [..., 3, 3], got {tuple(R.shape)}")
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    four_q2 = torch.stack(
        (
            1.0 + r00 + r11 + r22,
            1.0 + r00 - r11 - r22,
            1.0 - r00 + r11 - r22,
            1.0 - r00 - r11 + r22,
        ),
        dim=-1,
    )  # [..., 4] = 4 w^2, 4 x^2, 4 y^2, 4 z^2
    # Unselected candidates may have tiny or negative 4q^2: clamp so that neither the square
    # root nor the division produces non-finite values (their gradient is masked anyway).
    two_q = torch.sqrt(four_q2.clamp_min(0.25))  # [..., 4] = 2|q_i|
    cand = torch.stack(
        (
            torch.stack((four_q2[..., 0], r21 - r12, r02 - r20, r10 - r01), -1),
            torch.stack((r21 - r12, four_q2[..., 1], r01 + r10, r02 + r20), -1),
            torch.stack((r02 - r20, r01 + r10, four_q2[..., 2], r12 + r21), -1),
            torch.stack((r10 - r01, r02 + r20, r12 + r21, four_q2[..., 3]), -1),
        ),
        dim=-2,
    ) / (2.0 * two_q.unsqueeze(-1))  # [..., 4 candidates, 4]; row i = 4 q_i q / (4 |q_i|)
    best = four_q2.argmax(dim=-1)  # [...]
    idx = best[..., None, None].expand(*best.shape, 1, 4)
    q = cand.gather(-2, idx).squeeze(-2)
    return quat_canonical(quat_normalize(q))


def axis_angle_to_rotmat(v: Tensor) -> Tensor:
    """Rotation vector ``[..., 3]`` -> rotation matrix ``[..., 3, 3]`` (Rodrigues)."""
    return quat_to_rotmat(quat_exp(v))


def rotmat_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> rotation vector ``[..., 3]`` with angle in [0, pi]."""
    return quat_log(rotmat_to_quat(R))


def quat_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Geodesic interpolation in the exponential format of ReQFlow (Yue et al. 2025, eq. 6).

    ``q_t = q0 * exp(t * log(q0^-1 q1))`` with the shortest ``log``, so ``q1`` and ``-q1``
    give the same path. ``t`` is a number or a tensor broadcastable to the leading shape of
    the quaternions (``[...]``, not ``[..., 4]``). Its time derivative in the body frame is
    the constant ``log(q0^-1 q1)``.
    """
    u = quat_log(quat_mul(quat_conj(quat_normalize(q0)), q1))  # [..., 3]
    t = torch.as_tensor(t, dtype=u.dtype, device=u.device)
    return quat_mul(q0, quat_exp(t.unsqueeze(-1) * u))


def random_quat(
    shape: int | tuple[int, ...] | torch.Size = (),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform random rotations (Haar measure on SO(3)) as unit quaternions ``[*shape, 4]``.

    A standard normal in R^4 normalised is uniform on S^3, whose image in SO(3) is uniform.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    g = torch.randn(*shape, 4, generator=generator, device=device, dtype=dtype)
    return quat_normalize(g)


def hat(v: Tensor) -> Tensor:
    """Rotation vector ``[..., 3]`` -> skew matrix ``[..., 3, 3]`` with ``hat(a) b = a x b``."""
    _check_last(v, 3, "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), dim=-1).unflatten(-1, (3, 3))


def so3_jr_inv(u: Tensor, v: Tensor) -> Tensor:
    """Inverse right Jacobian of SO(3) at ``u``, applied to ``v`` (both ``[..., 3]``).

    If ``R(t) = R0 Exp(sigma(t))`` has body velocity ``omega`` (``R^T dR/dt = hat(omega)``),
    then ``dsigma/dt = J_r^{-1}(sigma) omega`` with
    ``J_r^{-1}(u) v = v + u x v / 2 + c(|u|) u x (u x v)``,
    ``c(a) = 1/a^2 - cot(a/2) / (2 a)`` (``-> 1/12`` as ``a -> 0``; series used there).
    This is the ``dexp^{-1}`` that Runge-Kutta-Munthe-Kaas methods need (Iserles et al. 2000).
    """
    a2 = (u * u).sum(-1, keepdim=True)  # [..., 1]
    # 1/a^2 - cot(a/2)/(2a) cancels badly for small a, so the series is used up to a = 0.1;
    # (1 + cos a)/sin a is written as cot(a/2), which is exact (0) at a = pi.
    small = a2 < 1e-2
    a = torch.sqrt(torch.where(small, torch.ones_like(a2), a2))
    c_big = 1.0 / (a * a) - 1.0 / (2.0 * a * torch.tan(0.5 * a))
    # series: 1/12 + a^2/720 + a^4/30240 + a^6/1209600 (next term < 3e-16 at a^2 = 1e-2)
    c_small = 1.0 / 12.0 + a2 * (1.0 / 720.0 + a2 * (1.0 / 30240.0 + a2 / 1209600.0))
    c = torch.where(small, c_small, c_big)
    u, v = torch.broadcast_tensors(u, v)
    uv = torch.linalg.cross(u, v, dim=-1)
    return v + 0.5 * uv + c * torch.linalg.cross(u, uv, dim=-1)
