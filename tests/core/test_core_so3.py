"""Property tests for flow3d.core.so3: round trips, edge angles, SLERP, gradients."""

import math

import pytest
import torch

from flow3d.core import so3
from flow3d.core.manifolds import SO3Quaternion
from flow3d.core.solvers import solve

F64 = torch.float64


def _rotvecs(angle: float, n: int = 64, seed: int = 0, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return angle * axis


def _same_rotation(p, q, atol):
    """Compare quaternions up to sign (q and -q are the same rotation)."""
    d = torch.minimum((p - q).abs().amax(-1), (p + q).abs().amax(-1))
    assert d.max().item() < atol, d.max().item()


EDGE_ANGLES = [0.0, 1e-7, 1e-4, 1e-3, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6]


@pytest.mark.parametrize("angle", EDGE_ANGLES)
def test_exp_log_round_trip_at_edge_angles(angle):
    v = _rotvecs(angle)
    q = so3.quat_exp(v)
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(v), dtype=F64), atol=1e-15)
    v2 = so3.quat_log(q)
    assert torch.allclose(v2, v, atol=1e-12, rtol=0), (v2 - v).abs().max()
    # matrix and axis-angle round trips
    R = so3.axis_angle_to_rotmat(v)
    assert torch.allclose(so3.rotmat_to_axis_angle(R), v, atol=1e-9, rtol=0)
    _same_rotation(so3.rotmat_to_quat(R), q, 1e-12)


def test_log_is_shortest_and_sign_invariant():
    q = so3.random_quat(500, generator=torch.Generator().manual_seed(1), dtype=F64)
    v, v_neg = so3.quat_log(q), so3.quat_log(-q)
    assert torch.allclose(v, v_neg, atol=1e-14)
    assert v.norm(dim=-1).max() <= math.pi + 1e-12
    # angles beyond pi wrap to the short way round
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    v_long = (math.pi + 0.3) * axis
    assert torch.allclose(so3.quat_log(so3.quat_exp(v_long)), -(math.pi - 0.3) * axis)


def test_random_round_trips_and_rotation_matrix_properties():
    g = torch.Generator().manual_seed(2)
    q = so3.random_quat((10, 7), generator=g, dtype=F64)
    assert q.shape == (10, 7, 4)
    R = so3.quat_to_rotmat(q)
    eye = torch.eye(3, dtype=F64).expand(10, 7, 3, 3)
    assert torch.allclose(R @ R.transpose(-1, -2), eye, atol=1e-13)
    assert torch.allclose(torch.det(R), torch.ones(10, 7, dtype=F64), atol=1e-13)
    _same_rotation(so3.rotmat_to_quat(R), q, 1e-13)
    _same_rotation(so3.quat_exp(so3.quat_log(q)), q, 1e-13)
    v = torch.randn(10, 7, 3, generator=g, dtype=F64)
    assert torch.allclose(so3.quat_apply(q, v), (R @ v.unsqueeze(-1)).squeeze(-1), atol=1e-13)


def test_quat_mul_composes_like_matrices_and_inverse():
    g = torch.Generator().manual_seed(3)
    p, q = so3.random_quat((2, 50), generator=g, dtype=F64)
    Rp, Rq = so3.quat_to_rotmat(p), so3.quat_to_rotmat(q)
    assert torch.allclose(so3.quat_to_rotmat(so3.quat_mul(p, q)), Rp @ Rq, atol=1e-13)
    ident = torch.tensor([1.0, 0, 0, 0], dtype=F64)
    _same_rotation(so3.quat_mul(q, so3.quat_inv(q)), ident.expand(50, 4), 1e-14)
    s = 3.0 * q  # non-unit quaternion: inv is still the inverse
    assert torch.allclose(so3.quat_mul(s, so3.quat_inv(s)), ident.expand(50, 4), atol=1e-14)
    assert (so3.quat_canonical(-q)[..., 0] >= 0).all()


def test_random_quat_is_uniform():
    # Haar measure: the rotation angle has density (1 - cos a) / pi, so E[cos a] = -1/2 ... the
    # mean of the rotated x axis is zero and E[w^2] = 1/4 per component.
    q = so3.random_quat(200_000, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert torch.allclose((q**2).mean(0), torch.full((4,), 0.25, dtype=F64), atol=5e-3)
    a = so3.quat_angle(q)
    assert abs(torch.cos(a).mean().item() + 0.5) < 5e-3


def test_slerp_endpoints_unit_norm_and_sign_invariance():
    g = torch.Generator().manual_seed(5)
    q0, q1 = so3.random_quat((2, 100), generator=g, dtype=F64)
    _same_rotation(so3.quat_slerp(q0, q1, 0.0), q0, 1e-14)
    _same_rotation(so3.quat_slerp(q0, q1, 1.0), q1, 1e-13)
    t = torch.rand(100, generator=g, dtype=F64)
    qt = so3.quat_slerp(q0, q1, t)
    assert torch.allclose(qt.norm(dim=-1), torch.ones(100, dtype=F64), atol=1e-14)
    _same_rotation(so3.quat_slerp(q0, -q1, t), qt, 1e-13)
    # constant speed along the shortest arc
    d01 = so3.quat_angle(so3.quat_mul(so3.quat_conj(q0), q1))
    d0t = so3.quat_angle(so3.quat_mul(so3.quat_conj(q0), qt))
    assert torch.allclose(d0t, t * d01, atol=1e-12)


def test_slerp_velocity_equals_log_map():
    """Body-frame finite-difference velocity of q_t equals log(q0^-1 q1) at every t."""
    g = torch.Generator().manual_seed(6)
    q0, q1 = so3.random_quat((2, 40), generator=g, dtype=F64)
    u = so3.quat_log(so3.quat_mul(so3.quat_conj(q0), q1))
    h = 1e-6
    for t in (0.0, 0.3, 0.9):
        qa, qb = so3.quat_slerp(q0, q1, t - h), so3.quat_slerp(q0, q1, t + h)
        vel = so3.quat_log(so3.quat_mul(so3.quat_conj(qa), qb)) / (2 * h)
        assert torch.allclose(vel, u, atol=1e-7), (vel - u).abs().max()


def test_euler_with_constant_body_velocity_reaches_exact_rotation():
    g = torch.Generator().manual_seed(7)
    q0 = so3.random_quat(32, generator=g)
    omega = 2.5 * torch.randn(32, 3, generator=g)  # body-frame angular velocity, rad per unit t
    res = solve(lambda x, t: omega, q0, method="euler", steps=50, manifold=SO3Quaternion())
    exact = so3.quat_mul(q0, so3.quat_exp(omega))
    _same_rotation(res.x, exact, 1e-5)
    assert res.nfe == 50


def test_jr_inv_matches_series_and_finite_differences():
    g = torch.Generator().manual_seed(8)
    u = torch.randn(20, 3, generator=g, dtype=F64)
    u = u * (3.0 / u.norm(dim=-1, keepdim=True).clamp_min(3.0))  # |u| < pi: Log is smooth there
    v = torch.randn(20, 3, generator=g, dtype=F64)
    # d/dt Log(Exp(u) Exp(h v)) at h=0 = Jr^-1(u) v
    h = 1e-6
    qu = so3.quat_exp(u)
    fd = (
        so3.quat_log(so3.quat_mul(qu, so3.quat_exp(h * v)))
        - so3.quat_log(so3.quat_mul(qu, so3.quat_exp(-h * v)))
    ) / (2 * h)
    assert torch.allclose(so3.so3_jr_inv(u, v), fd, atol=1e-7)
    # continuity across the series switch at |u| = 0.1
    for a in (0.1 - 1e-9, 0.1 + 1e-9):
        uu = a * torch.tensor([[0.6, 0.8, 0.0]], dtype=F64)
        vv = torch.tensor([[0.3, -1.0, 2.0]], dtype=F64)
        ref = vv + 0.5 * torch.cross(uu, vv, dim=-1)
        ref = ref + (1 / 12 + a**2 / 720) * torch.cross(uu, torch.cross(uu, vv, dim=-1), dim=-1)
        assert torch.allclose(so3.so3_jr_inv(uu, vv), ref, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-3, 1.0, math.pi - 1e-6])
def test_gradients_finite_and_correct_near_edges(angle):
    v = _rotvecs(angle, n=4, seed=9).requires_grad_(True)
    if angle > 0:
        assert torch.autograd.gradcheck(so3.quat_exp, (v,))
    (g,) = torch.autograd.grad(so3.quat_exp(v).sum(), v)
    assert torch.isfinite(g).all()
    q = so3.quat_exp(v.detach()).requires_grad_(True)
    if 0 < angle < 3:
        assert torch.autograd.gradcheck(so3.quat_log, (q,))
    (gq,) = torch.autograd.grad(so3.quat_log(q).pow(2).sum(), q)
    assert torch.isfinite(gq).all()
    R = so3.axis_angle_to_rotmat(v.detach()).requires_grad_(True)
    (gR,) = torch.autograd.grad(so3.rotmat_to_quat(R).sum(), R)
    assert torch.isfinite(gR).all()


def test_gradient_at_exact_identity_is_the_linearisation():
    v = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda x: so3.quat_exp(x)[0], v)[:, 0]  # [4, 3]
    expected = torch.cat([torch.zeros(1, 3, dtype=F64), 0.5 * torch.eye(3, dtype=F64)])
    assert torch.allclose(jac, expected)
    q = torch.tensor([[1.0, 0, 0, 0]], dtype=F64, requires_grad=True)
    jl = torch.autograd.functional.jacobian(lambda x: so3.quat_log(x)[0], q)[:, 0]  # [3, 4]
    assert torch.isfinite(jl).all()
    assert torch.allclose(jl[:, 1:], 2.0 * torch.eye(3, dtype=F64))


def test_float32_accuracy_at_edges():
    for angle in (1e-7, math.pi - 1e-6):
        v = _rotvecs(angle, n=16, dtype=torch.float32)
        v2 = so3.quat_log(so3.quat_exp(v))
        err = torch.minimum((v2 - v).norm(dim=-1), (v2 + v).norm(dim=-1))  # pi: +-axis
        assert err.max() < 1e-5
        R = so3.axis_angle_to_rotmat(v)
        R2 = so3.axis_angle_to_rotmat(so3.rotmat_to_axis_angle(R))
        assert (R2 - R).abs().max() < 1e-5


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="last dimension 4"):
        so3.quat_mul(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[..., 3, 3\]"):
        so3.rotmat_to_quat(torch.zeros(4, 4))


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_leading_shapes_are_preserved(shape):
    g = torch.Generator().manual_seed(10)
    q = so3.random_quat(shape, generator=g, dtype=F64)
    v = torch.randn(*shape, 3, generator=g, dtype=F64)
    assert q.shape == (*shape, 4)
    assert so3.quat_exp(v).shape == (*shape, 4)
    assert so3.quat_log(q).shape == (*shape, 3)
    assert so3.quat_apply(q, v).shape == (*shape, 3)
    assert so3.quat_to_rotmat(q).shape == (*shape, 3, 3)
    assert so3.rotmat_to_quat(so3.quat_to_rotmat(q)).shape == (*shape, 4)
    assert so3.quat_slerp(q, q, 0.5).shape == (*shape, 4)
    assert so3.so3_jr_inv(v, v).shape == (*shape, 3)
    assert so3.hat(v).shape == (*shape, 3, 3)


def test_broadcasting_matches_explicit_expansion():
    g = torch.Generator().manual_seed(11)
    p = so3.random_quat((2, 1), generator=g, dtype=F64)
    q = so3.random_quat((1, 3), generator=g, dtype=F64)
    pq = so3.quat_mul(p, q)
    assert pq.shape == (2, 3, 4)
    assert torch.equal(pq, so3.quat_mul(p.expand(2, 3, 4), q.expand(2, 3, 4)))
    v = torch.randn(5, 3, generator=g, dtype=F64)  # one rotation applied to many vectors
    assert torch.allclose(so3.quat_apply(p[0, 0], v), (so3.quat_to_rotmat(p[0, 0]) @ v.T).T)
    t = torch.tensor([[0.0], [1.0]], dtype=F64)  # per-row times broadcast over a [2, 3] batch
    qt = so3.quat_slerp(p.expand(2, 3, 4), q.expand(2, 3, 4), t)
    _same_rotation(qt[0], p.expand(2, 3, 4)[0], 1e-13)
    _same_rotation(qt[1], q.expand(2, 3, 4)[1], 1e-13)
    assert torch.allclose(so3.hat(v) @ v.unsqueeze(-1), torch.zeros(5, 3, 1, dtype=F64))
