"""Contract: every solver integrates every path's conditional velocity field to the path.

For a fixed pair ``(x_0, x_1)`` the conditional field whose flow is the path itself is

- affine: ``u(x, t) = alpha' x_1 + sigma' (x - alpha x_1) / sigma``,
- geodesic: ``u(x, t) = kappa' log_x(x_1) / (1 - kappa)``,

so solving ``dx/dt = u`` from the path's start must land on ``path.sample(x_0, x_1, t1).x_t``
(``t1 = 0.95`` stays clear of ``sigma = 0``), and doubling the steps must cut the error by
about ``2^order`` unless it is already at round-off (straight paths are exact for every
method).
"""

import pytest
import torch

from flow3d.core.manifolds import Euclidean, Product, SO3Quaternion
from flow3d.core.paths import AffinePath, GeodesicPath, PathSample
from flow3d.core.schedulers import CosineScheduler, LinearScheduler, VPScheduler
from flow3d.core.solvers import METHOD_ORDER, SOLVERS, solve

T1 = 0.95
STEPS = 40
TOL = {"euler": 5e-2, "midpoint": 5e-3, "heun": 5e-3, "rk4": 1e-4, "dopri5": 1e-4}


def _quats(n, g):
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def _affine_case(sched):
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    x_1 = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    path = AffinePath(sched)

    def u(x, t):
        c = sched(torch.as_tensor(t, dtype=x.dtype))
        return c.d_alpha_t * x_1 + c.d_sigma_t * (x - c.alpha_t * x_1) / c.sigma_t

    return path, x_0, x_1, u, None


def _geodesic_case(manifold, x_0, x_1):
    path = GeodesicPath(manifold)

    def u(x, t):
        return manifold.logmap(x, x_1) / (1.0 - t)

    return path, x_0, x_1, u, manifold


def _cases():
    g = torch.Generator().manual_seed(1)
    se3 = Product([Euclidean(3), SO3Quaternion()])
    se3_0 = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64), _quats(6, g)], -1)
    se3_1 = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64), _quats(6, g)], -1)
    return {
        "affine-linear": _affine_case(LinearScheduler()),
        "affine-cosine": _affine_case(CosineScheduler()),
        "affine-vp": _affine_case(VPScheduler()),
        "geodesic-euclidean": _geodesic_case(
            Euclidean(3), torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.randn(5, 3, generator=g, dtype=torch.float64)),
        "geodesic-so3": _geodesic_case(SO3Quaternion(), _quats(5, g), _quats(5, g)),
        "geodesic-se3": _geodesic_case(se3, se3_0, se3_1),
    }  # fmt: skip


CASES = _cases()


@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_solver_follows_every_path(name, method):
    path, x_0, x_1, u, manifold = CASES[name]
    target = path.sample(x_0, x_1, torch.full((x_0.shape[0],), T1, dtype=x_0.dtype))
    assert isinstance(target, PathSample)
    # the path's start (VP's alpha_0 is ~6.6e-3, not 0, so x_t at t = 0 is not exactly x_0)
    start = path.sample(x_0, x_1, torch.zeros(x_0.shape[0], dtype=x_0.dtype)).x_t

    def error(**kwargs):
        out = solve(u, start, method=method, t1=T1, manifold=manifold, **kwargs)
        assert out.nfe > 0 and out.x.shape == x_0.shape
        if manifold is None:
            return float((out.x - target.x_t).abs().max())
        return float(manifold.logmap(target.x_t, out.x).abs().max())

    if method == "dopri5":
        err = error(atol=1e-7, rtol=1e-7)
        assert err < TOL[method], f"{name} / {method}: error {err:.2e}"
        return
    coarse, fine = error(steps=STEPS // 2), error(steps=STEPS)
    assert fine < TOL[method], f"{name} / {method}: error {fine:.2e}"
    if fine > 1e-10:
        rate = coarse / fine
        assert rate > 0.6 * 2 ** METHOD_ORDER[method], f"{name} / {method}: rate {rate:.2f}"
