"""Schedulers and paths: derivatives against finite differences, endpoints, a contract test."""

import math

import pytest
import torch

from flow3d.core.paths import AffinePath, GeodesicPath, PathSample, expand_time
from flow3d.core.schedulers import (
    SCHEDULERS,
    CosineScheduler,
    LinearScheduler,
    VPScheduler,
    build_scheduler,
)
from flow3d.errors import ConfigError

ALL_SCHEDULERS = [LinearScheduler(), CosineScheduler(), VPScheduler()]


@pytest.mark.parametrize("sched", ALL_SCHEDULERS, ids=lambda s: s.name)
def test_scheduler_derivatives_match_finite_differences(sched):
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    out, hi, lo = sched(t), sched(t + h), sched(t - h)
    fd_alpha = (hi.alpha_t - lo.alpha_t) / (2 * h)
    fd_sigma = (hi.sigma_t - lo.sigma_t) / (2 * h)
    torch.testing.assert_close(out.d_alpha_t, fd_alpha, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.d_sigma_t, fd_sigma, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sched", ALL_SCHEDULERS, ids=lambda s: s.name)
def test_scheduler_endpoints(sched):
    ends = sched(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends.alpha_t[1] == pytest.approx(1.0) and ends.sigma_t[1] == pytest.approx(0.0)
    assert ends.sigma_t[0] == pytest.approx(1.0, abs=1e-4)
    assert ends.alpha_t[0] == pytest.approx(0.0, abs=1e-2)  # VP: exp(-B(1)/2) ~ 6.6e-3
    if not isinstance(sched, VPScheduler):
        assert ends.alpha_t[0] == 0.0


def test_vp_and_cosine_preserve_variance():
    t = torch.rand(100, dtype=torch.float64)
    for sched in (CosineScheduler(), VPScheduler()):
        out = sched(t)
        torch.testing.assert_close(out.alpha_t**2 + out.sigma_t**2, torch.ones_like(t))


def test_build_scheduler_by_name_and_unknown_name():
    for name, cls in SCHEDULERS.items():
        assert isinstance(build_scheduler(name), cls)
    with pytest.raises(ConfigError, match="unknown scheduler 'cosin'"):
        build_scheduler("cosin")


@pytest.mark.parametrize("sched", ALL_SCHEDULERS, ids=lambda s: s.name)
def test_affine_path_contract(sched):
    """Every affine path: shapes, endpoints, and dx_t = d/dt x_t (finite differences)."""
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    x_1 = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    t = torch.rand(5, generator=g, dtype=torch.float64) * 0.9 + 0.05
    path = AffinePath(sched)
    s = path.sample(x_0, x_1, t)
    assert isinstance(s, PathSample)
    assert s.x_t.shape == s.dx_t.shape == x_0.shape and s.t is t
    h = 1e-6
    fd = (path.sample(x_0, x_1, t + h).x_t - path.sample(x_0, x_1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, rtol=1e-6, atol=1e-6)
    at_one = path.sample(x_0, x_1, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(at_one.x_t, x_1)


def test_linear_path_is_rectified_flow():
    x_0, x_1 = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = AffinePath().sample(x_0, x_1, t)
    torch.testing.assert_close(s.x_t, t[:, None] * x_1 + (1 - t[:, None]) * x_0)
    torch.testing.assert_close(s.dx_t, x_1 - x_0)


def test_path_rejects_mismatched_shapes_and_times():
    with pytest.raises(ValueError, match="differ in shape"):
        AffinePath().sample(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\[B=2\]"):
        expand_time(torch.zeros(3), torch.zeros(2, 4))


# ---- geodesic paths (need core-geometry's manifolds) ----------------------------------------


def _manifolds():
    return pytest.importorskip("flow3d.core.manifolds", reason="flow3d.core.manifolds not built")


def _fd_tangent(manifold, path, x_0, x_1, t, h=1e-4):
    """Tangent at x_t by central differences through the log map: (log(x_t, x_{t+h}) -
    log(x_t, x_{t-h})) / 2h."""
    x_t = path.sample(x_0, x_1, t).x_t
    fwd = manifold.logmap(x_t, path.sample(x_0, x_1, t + h).x_t)
    bwd = manifold.logmap(x_t, path.sample(x_0, x_1, t - h).x_t)
    return (fwd - bwd) / (2 * h)


def _random_quats(n, g):
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def test_geodesic_euclidean_equals_linear_affine_path():
    m = _manifolds()
    x_0, x_1 = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    geo = GeodesicPath(m.Euclidean(3)).sample(x_0, x_1, t)
    aff = AffinePath().sample(x_0, x_1, t)
    torch.testing.assert_close(geo.x_t, aff.x_t)
    torch.testing.assert_close(geo.dx_t, aff.dx_t)


def test_geodesic_so3_velocity_is_log_map_and_matches_finite_differences():
    m = _manifolds()
    so3 = m.SO3Quaternion()
    g = torch.Generator().manual_seed(1)
    q_0, q_1 = _random_quats(8, g), _random_quats(8, g)
    t = torch.tensor([0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 0.9, 0.97], dtype=torch.float64)
    path = GeodesicPath(so3)
    s = path.sample(q_0, q_1, t)
    assert s.x_t.shape == (8, 4) and s.dx_t.shape == (8, 3)
    torch.testing.assert_close(s.x_t.norm(dim=-1), torch.ones(8, dtype=torch.float64))
    # Body-frame velocity of exp-format SLERP is constant: log(q_0^-1 q_1).
    torch.testing.assert_close(s.dx_t, so3.logmap(q_0, q_1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.dx_t, _fd_tangent(so3, path, q_0, q_1, t), rtol=1e-5, atol=1e-6)


def test_geodesic_product_se3_matches_finite_differences_with_nonlinear_kappa():
    m = _manifolds()
    se3 = m.Product([m.Euclidean(3), m.SO3Quaternion()])
    g = torch.Generator().manual_seed(2)
    x_0 = torch.cat([torch.randn(5, 4, 3, generator=g, dtype=torch.float64),
                     _random_quats(20, g).reshape(5, 4, 4)], dim=-1)  # [B, N, 7]
    x_1 = torch.cat([torch.randn(5, 4, 3, generator=g, dtype=torch.float64),
                     _random_quats(20, g).reshape(5, 4, 4)], dim=-1)

    def kappa(t):  # smooth, kappa(0) = 0, kappa(1) = 1
        return 1 - (1 - t) ** 2, 2 * (1 - t)

    path = GeodesicPath(se3, kappa=kappa)
    t = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.95], dtype=torch.float64)
    s = path.sample(x_0, x_1, t)
    assert s.x_t.shape == (5, 4, 7) and s.dx_t.shape == (5, 4, 6)
    torch.testing.assert_close(s.dx_t, _fd_tangent(se3, path, x_0, x_1, t), rtol=1e-5, atol=1e-6)
    end = path.sample(x_0, x_1, torch.ones(5, dtype=torch.float64)).x_t
    torch.testing.assert_close(se3.logmap(end, x_1), torch.zeros(5, 4, 6, dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_geodesic_rejects_bad_kappa():
    with pytest.raises(ValueError, match="kappa"):
        GeodesicPath(object(), kappa="cosine")
    assert math.isfinite(1.0)
