"""Contract and property tests for flow3d.core.manifolds."""

import math

import pytest
import torch

from flow3d.core import so3
from flow3d.core.manifolds import Euclidean, Manifold, Product, SO3Matrix, SO3Quaternion

F64 = torch.float64

MANIFOLDS = {
    "euclidean3": Euclidean(3),
    "so3_quat": SO3Quaternion(),
    "so3_mat": SO3Matrix(),
    "se3": Product([Euclidean(3), SO3Quaternion()]),
    "se3_mat": Product([Euclidean(3), SO3Matrix()]),
}


def _pair(m: Manifold, shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = m.random_base(*shape, generator=g, dtype=F64)
    x1 = m.random_base(*shape, generator=g, dtype=F64)
    return x0, x1


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_shapes_and_exp_log_inverse(name):
    m = MANIFOLDS[name]
    x0, x1 = _pair(m)
    assert x0.shape == (6, 5, m.point_dim)
    u = m.logmap(x0, x1)
    assert u.shape == (6, 5, m.tangent_dim)
    assert m.dist(m.expmap(x0, u), x1).max() < 1e-10
    assert torch.allclose(m.projx(x0), x0, atol=1e-12)
    assert torch.allclose(m.proju(x0, u), u)


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_geodesic_endpoints_constant_speed(name):
    m = MANIFOLDS[name]
    x0, x1 = _pair(m, seed=1)
    assert m.dist(m.geodesic(x0, x1, 0.0), x0).max() < 1e-12
    assert m.dist(m.geodesic(x0, x1, 1.0), x1).max() < 1e-10
    t = torch.rand(6, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    xt = m.geodesic(x0, x1, t)
    assert torch.allclose(m.dist(x0, xt), t * m.dist(x0, x1), atol=1e-10)
    assert torch.allclose(m.dist(xt, x1), (1 - t) * m.dist(x0, x1), atol=1e-10)


def test_quaternion_and_matrix_manifolds_agree():
    q0, q1 = _pair(SO3Quaternion(), seed=3)
    R0, R1 = (so3.quat_to_rotmat(q).flatten(-2) for q in (q0, q1))
    uq, uR = SO3Quaternion().logmap(q0, q1), SO3Matrix().logmap(R0, R1)
    assert torch.allclose(uq, uR, atol=1e-10)
    t = 0.37
    Rq = so3.quat_to_rotmat(SO3Quaternion().geodesic(q0, q1, t)).flatten(-2)
    assert torch.allclose(Rq, SO3Matrix().geodesic(R0, R1, t), atol=1e-12)
    # the SO3Quaternion geodesic is the ReQFlow exponential-format SLERP
    assert torch.allclose(SO3Quaternion().geodesic(q0, q1, t), so3.quat_slerp(q0, q1, t))


def test_quaternion_sign_is_irrelevant():
    m = SO3Quaternion()
    q0, q1 = _pair(m, seed=4)
    assert torch.allclose(m.logmap(q0, q1), m.logmap(-q0, q1), atol=1e-12)
    assert torch.allclose(m.logmap(q0, q1), m.logmap(q0, -q1), atol=1e-12)
    assert m.dist(q0, -q0).max() < 1e-7


def test_body_frame_convention():
    """expmap(q, u) = q * exp(u): the tangent is expressed in the moving (body) frame."""
    q = so3.quat_exp(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64))  # 90 deg about z
    u = torch.tensor([0.1, 0.0, 0.0], dtype=F64)  # small turn about the body x axis
    R = so3.quat_to_rotmat(SO3Quaternion().expmap(q, u))
    expected = so3.quat_to_rotmat(q) @ so3.axis_angle_to_rotmat(u)
    assert torch.allclose(R, expected)


def test_so3_matrix_projx_is_nearest_rotation():
    m = SO3Matrix()
    g = torch.Generator().manual_seed(5)
    R = m.random_base(50, generator=g, dtype=F64)
    noisy = R + 1e-3 * torch.randn(R.shape, generator=g, dtype=F64)
    P = m.projx(noisy).unflatten(-1, (3, 3))
    assert torch.allclose(P @ P.transpose(-1, -2), torch.eye(3, dtype=F64).expand(50, 3, 3))
    assert torch.allclose(torch.det(P), torch.ones(50, dtype=F64))
    assert (P.flatten(-2) - R).abs().max() < 1e-2
    # a reflection is mapped to a proper rotation, not left as det -1
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64)).flatten()
    assert torch.det(m.projx(refl).unflatten(-1, (3, 3))) > 0


def test_product_split_cat_and_dims():
    m = Product([Euclidean(3), SO3Quaternion()])
    assert (m.point_dim, m.tangent_dim) == (7, 6)
    x = m.random_base(2, 11)
    trans, rot = m.split_point(x)
    assert trans.shape == (2, 11, 3) and rot.shape == (2, 11, 4)
    assert torch.equal(m.cat([trans, rot]), x)
    assert torch.allclose(rot.norm(dim=-1), torch.ones(2, 11))
    u = torch.randn(2, 11, 6)
    du, dr = m.split_tangent(u)
    y = m.expmap(x, u)
    assert torch.allclose(m.split_point(y)[0], trans + du)
    assert torch.allclose(m.split_point(y)[1], SO3Quaternion().expmap(rot, dr))


def test_dexpinv_identity_on_euclidean_and_jr_inv_on_so3():
    u, v = torch.randn(2, 10, 6, dtype=F64)
    m = Product([Euclidean(3), SO3Quaternion()])
    out = m.dexpinv(u, v)
    assert torch.equal(out[..., :3], v[..., :3])
    assert torch.allclose(out[..., 3:], so3.so3_jr_inv(u[..., 3:], v[..., 3:]))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="last dimension 7"):
        Product([Euclidean(3), SO3Quaternion()]).split_point(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="fixed dimensions"):
        Product([Euclidean(), SO3Quaternion()])
    with pytest.raises(ValueError):
        Euclidean(0)


def test_euclidean_without_dim_broadcasts_time_over_full_shape():
    m = Euclidean()
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    t = torch.tensor([[0.5], [0.25], [0.0], [1.0]])
    assert torch.allclose(m.geodesic(x0, x1, t), t.expand(4, 2))
    assert m.random_base(3, 5).shape == (3, 5)
