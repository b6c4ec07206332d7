"""State spaces for flows: Euclidean space, SO(3) (quaternions or matrices) and products.

A :class:`Manifold` says how a state moves along a tangent vector. Points and tangents are
tensors whose *last* axis holds the coordinates (``point_dim`` and ``tangent_dim`` entries);
every leading axis is a batch axis. The SO(3) manifolds are Lie groups and use body-frame
tangents (rotation vectors ``[..., 3]``)::

    expmap(x, u) = x * Exp(u)           logmap(x, y) = Log(x^-1 y)  (shortest)
    geodesic(x0, x1, t) = expmap(x0, t * logmap(x0, x1))

so a constant body velocity traces a geodesic, and ``SO3Quaternion().geodesic`` is the
exponential-format SLERP of ReQFlow (Yue et al. 2025). ``dexpinv(u, v)`` is the inverse
differential of ``u -> expmap(x, u)`` in body coordinates (identity on Euclidean space); the
Runge-Kutta-Munthe-Kaas steps of :mod:`flow3d.core.solvers` use it to keep their full order
on Lie groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flow3d.core import so3

__all__ = ["Euclidean", "Manifold", "Product", "SO3Matrix", "SO3Quaternion"]


def _leading_t(t: Tensor | float, like: Tensor) -> Tensor:
    """``t`` (a number or a tensor of the leading shape ``[...]``) as ``[..., 1]``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.unsqueeze(-1)


class Manifold:
    """A state space. Subclasses set ``point_dim``/``tangent_dim`` and the maps below."""

    point_dim: int | None = None
    tangent_dim: int | None = None

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Move point ``x [..., point_dim]`` along tangent ``u [..., tangent_dim]``."""
        raise NotImplementedError

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """The tangent at ``x`` whose ``expmap`` reaches ``y`` (the shortest one)."""
        raise NotImplementedError

    def projx(self, x: Tensor) -> Tensor:
        """The nearest point of the manifold (removes numerical drift)."""
        return x

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project ``u`` onto the tangent space at ``x``."""
        return u

    def dexpinv(self, u: Tensor, v: Tensor) -> Tensor:
        """``d/dt u(t)`` for a curve ``y(t) = expmap(x, u(t))`` moving with velocity ``v``."""
        return v

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """``expmap(x0, t logmap(x0, x1))``; ``t`` is a number or a tensor of shape ``[...]``."""
        u = self.logmap(x0, x1)
        return self.expmap(x0, _leading_t(t, u) * u)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Geodesic distance ``|logmap(x, y)|`` over the last axis, shape ``[...]``."""
        return self.logmap(x, y).norm(dim=-1)

    def random_base(
        self,
        *shape: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Samples of the natural source distribution, shape ``[*shape, point_dim]``."""
        raise NotImplementedError(f"{type(self).__name__} has no base distribution")

    def check_point(self, x: Tensor, name: str = "point") -> None:
        if self.point_dim is not None and x.shape[-1:] != (self.point_dim,):
            raise ValueError(
                f"{type(self).__name__} {name} must have last dimension {self.point_dim}, "
                f"got shape {tuple(x.shape)}"
            )

    def check_tangent(self, u: Tensor, name: str = "tangent") -> None:
        if self.tangent_dim is not None and u.shape[-1:] != (self.tangent_dim,):
            raise ValueError(
                f"{type(self).__name__} {name} must have last dimension {self.tangent_dim}, "
                f"got shape {tuple(u.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euclidean(Manifold):
    """R^dim (``dim=None``: any shape, the last axis is not special). ``expmap = x + u``."""

    def __init__(self, dim: int | None = None):
        if dim is not None and dim < 1:
            raise ValueError(f"Euclidean dim must be >= 1, got {dim}")
        self.point_dim = self.tangent_dim = dim

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        if self.point_dim is None:  # no coordinate axis: t broadcasts over the full shape
            t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
            return x0 + t * (x1 - x0)
        return super().geodesic(x0, x1, t)

    def random_base(self, *shape, generator=None, device=None, dtype=torch.float32) -> Tensor:
        """Standard normal; with ``dim=None`` ``shape`` is the full shape."""
        full = shape if self.point_dim is None else (*shape, self.point_dim)
        return torch.randn(*full, generator=generator, device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"Euclidean({self.point_dim})" if self.point_dim is not None else "Euclidean()"


def _so3_dexpinv(u: Tensor, v: Tensor) -> Tensor:
    return so3.so3_jr_inv(u, v)


class SO3Quaternion(Manifold):
    """SO(3) as unit quaternions ``[..., 4]`` (w, x, y, z); tangents are body rotvecs ``[..., 3]``.

    ``logmap`` is the shortest rotation, so ``q`` and ``-q`` are the same point.
    """

    point_dim = 4
    tangent_dim = 3

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return so3.quat_mul(x, so3.quat_exp(u))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return so3.quat_log(so3.quat_mul(so3.quat_conj(so3.quat_normalize(x)), y))

    def projx(self, x: Tensor) -> Tensor:
        return so3.quat_normalize(x)

    def dexpinv(self, u: Tensor, v: Tensor) -> Tensor:
        return _so3_dexpinv(u, v)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return so3.quat_angle(so3.quat_mul(so3.quat_conj(so3.quat_normalize(x)), y))

    def random_base(self, *shape, generator=None, device=None, dtype=torch.float32) -> Tensor:
        """Uniform (Haar) rotations."""
        return so3.random_quat(shape, generator=generator, device=device, dtype=dtype)


class SO3Matrix(Manifold):
    """SO(3) as rotation matrices flattened row-major ``[..., 9]``; tangents body rotvecs.

    ``expmap(R, u) = R Exp(u)``, ``logmap(R0, R1) = Log(R0^T R1)``: the matrix geodesic used
    by FrameFlow (Yim et al. 2023). ``projx`` is the nearest rotation (SVD, det fixed to +1).
    """

    point_dim = 9
    tangent_dim = 3

    @staticmethod
    def _mat(x: Tensor) -> Tensor:
        return x.unflatten(-1, (3, 3))

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return (self._mat(x) @ so3.axis_angle_to_rotmat(u)).flatten(-2)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return so3.rotmat_to_axis_angle(self._mat(x).transpose(-1, -2) @ self._mat(y))

    def projx(self, x: Tensor) -> Tensor:
        U, _, Vh = torch.linalg.svd(self._mat(x))
        d = torch.det(U @ Vh).sign()  # [...]; -1 where the nearest orthogonal matrix reflects
        flip = torch.ones(*d.shape, 3, dtype=x.dtype, device=x.device)
        flip[..., 2] = d
        return (U @ (flip.unsqueeze(-1) * Vh)).flatten(-2)

    def dexpinv(self, u: Tensor, v: Tensor) -> Tensor:
        return _so3_dexpinv(u, v)

    def random_base(self, *shape, generator=None, device=None, dtype=torch.float32) -> Tensor:
        """Uniform (Haar) rotations."""
        q = so3.random_quat(shape, generator=generator, device=device, dtype=dtype)
        return so3.quat_to_rotmat(q).flatten(-2)


class Product(Manifold):
    """Cartesian product; points and tangents are the components concatenated on the last axis.

    ``Product([Euclidean(3), SO3Quaternion()])`` is SE(3) as (translation, rotation) with
    points ``[..., 7]`` and tangents ``[..., 6]`` (translation velocity in the world frame,
    angular velocity in the body frame); a protein backbone is a ``[B, N, 7]`` state.
    """

    def __init__(self, manifolds: Sequence[Manifold]):
        manifolds = list(manifolds)
        if not manifolds:
            raise ValueError("Product needs at least one manifold")
        for m in manifolds:
            if m.point_dim is None or m.tangent_dim is None:
                raise ValueError(f"Product components need fixed dimensions, got {m!r}")
        self.manifolds = manifolds
        self.point_dims = [m.point_dim for m in manifolds]
        self.tangent_dims = [m.tangent_dim for m in manifolds]
        self.point_dim = sum(self.point_dims)
        self.tangent_dim = sum(self.tangent_dims)

    def split_point(self, x: Tensor) -> list[Tensor]:
        self.check_point(x)
        return list(x.split(self.point_dims, dim=-1))

    def split_tangent(self, u: Tensor) -> list[Tensor]:
        self.check_tangent(u)
        return list(u.split(self.tangent_dims, dim=-1))

    @staticmethod
    def cat(parts: Sequence[Tensor]) -> Tensor:
        """Join per-component points (or tangents) into one state."""
        return torch.cat(list(parts), dim=-1)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        xs, us = self.split_point(x), self.split_tangent(u)
        return self.cat([m.expmap(a, b) for m, a, b in zip(self.manifolds, xs, us)])

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        xs, ys = self.split_point(x), self.split_point(y)
        return self.cat([m.logmap(a, b) for m, a, b in zip(self.manifolds, xs, ys)])

    def projx(self, x: Tensor) -> Tensor:
        return self.cat([m.projx(a) for m, a in zip(self.manifolds, self.split_point(x))])

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        xs, us = self.split_point(x), self.split_tangent(u)
        return self.cat([m.proju(a, b) for m, a, b in zip(self.manifolds, xs, us)])

    def dexpinv(self, u: Tensor, v: Tensor) -> Tensor:
        us, vs = self.split_tangent(u), self.split_tangent(v)
        return self.cat([m.dexpinv(a, b) for m, a, b in zip(self.manifolds, us, vs)])

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        x0s, x1s = self.split_point(x0), self.split_point(x1)
        return self.cat([m.geodesic(a, b, t) for m, a, b in zip(self.manifolds, x0s, x1s)])

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Product metric: ``sqrt(sum_i d_i^2)``."""
        xs, ys = self.split_point(x), self.split_point(y)
        d2 = [m.dist(a, b) ** 2 for m, a, b in zip(self.manifolds, xs, ys)]
        return torch.stack(d2, dim=-1).sum(-1).sqrt()

    def random_base(self, *shape, generator=None, device=None, dtype=torch.float32) -> Tensor:
        kw = dict(generator=generator, device=device, dtype=dtype)
        return self.cat([m.random_base(*shape, **kw) for m in self.manifolds])

    def __repr__(self) -> str:
        return f"Product([{', '.join(repr(m) for m in self.manifolds)}])"
