"""One contract for every solver and every path (diffusers' SchedulerCommonTest habit).

Every solver runs on every state space through the same checks: shape and dtype preserved,
NFE counted, trajectory endpoints and times, the exact endpoint where one exists, steps + grid
rejected, and forward-then-inverse returning the start. Every path (AffinePath with each
scheduler, GeodesicPath on each manifold) is checked for shapes, endpoints, and that its
``dx_t`` really is the time derivative of its ``x_t``: integrating ``dx_t`` with each solver
follows ``x_t``; and each path's state-dependent conditional field is integrated by each solver
with the expected convergence rate (bottom of the file).
"""

import pytest
import torch

from flow3d.core import so3
from flow3d.core.analytic import GaussianFlow
from flow3d.core.manifolds import Euclidean, Product, SO3Matrix, SO3Quaternion
from flow3d.core.paths import AffinePath, GeodesicPath, PathSample
from flow3d.core.schedulers import SCHEDULERS, CosineScheduler, LinearScheduler, VPScheduler
from flow3d.core.solvers import METHOD_ORDER, SOLVERS, solve

B = 6
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
# endpoint error allowed at 32 steps on the Euclidean cases (Euler: per case)
ENDPOINT_TOL = {"midpoint": 2e-3, "heun": 2e-3, "rk4": 1e-4, "dopri5": 1e-3}
# forward-then-inverse error allowed at 32 steps on the (smooth, linear) Gaussian field
INVERSE_TOL = {"euler": 0.2, "midpoint": 2e-3, "heun": 2e-3, "rk4": 1e-5, "dopri5": 1e-4}


def _gaussian_case(dtype):
    flow = GaussianFlow(torch.tensor([1.0, -1.0, 0.5]), torch.diag(torch.tensor([2.0, 0.5, 1.0])))
    x0 = torch.randn(B, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    return None, flow, x0, flow.endpoint(x0).to(dtype), 1e-1


def _image_case(dtype):
    """[B, C, H, W] state: only the leading axis is a batch axis for the user, none for us."""
    x0 = torch.randn(B, 2, 4, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    return None, (lambda x, t: -x), x0, x0 * torch.exp(torch.tensor(-1.0)).to(dtype), 5e-2


def _const_lie_case(manifold, make_point, dtype):
    g = torch.Generator().manual_seed(2)
    x0 = make_point(g).to(dtype)
    u = (0.8 * torch.randn(*x0.shape[:-1], manifold.tangent_dim, generator=g)).to(dtype)
    return manifold, (lambda x, t: u), x0, manifold.expmap(x0, u), 1e-5


SE3 = Product([Euclidean(3), SO3Quaternion()])
CASES = {
    "euclid_gaussian": _gaussian_case,
    "euclid_image": _image_case,
    "so3_quat": lambda dt: _const_lie_case(
        SO3Quaternion(), lambda g: so3.random_quat(B, generator=g), dt
    ),
    "so3_matrix": lambda dt: _const_lie_case(
        SO3Matrix(), lambda g: so3.quat_to_rotmat(so3.random_quat(B, generator=g)).flatten(-2), dt
    ),
    "se3_frames": lambda dt: _const_lie_case(
        SE3, lambda g: SE3.random_base(B, 5, generator=g), dt  # [B, N=5, 7] residue frames
    ),
}


def _close(manifold, a, b):
    if manifold is None:
        return (a - b).abs().max().item()
    return manifold.dist(a, b).max().item()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solver_contract(method, case, dtype):
    manifold, field, x0, exact, tol = CASES[case](dtype)
    calls = []

    def v(x, t):
        assert t.ndim == 0 and x.dtype == dtype
        calls.append(1)
        return field(x, t)

    steps = None if method == "dopri5" else 32
    res = solve(v, x0, method=method, steps=steps, manifold=manifold, return_trajectory=True)
    # shape, dtype, NFE
    assert res.x.shape == x0.shape and res.x.dtype == dtype
    assert res.nfe == len(calls)
    if method != "dopri5":
        assert res.nfe == 32 * STAGES[method]
    # times and trajectory endpoints
    assert res.times[0] == 0.0 and res.times[-1] == 1.0
    assert (res.times.diff() > 0).all()
    assert len(res.trajectory) == len(res.times)
    assert torch.equal(res.trajectory[0], x0) and torch.equal(res.trajectory[-1], res.x)
    assert all(s.shape == x0.shape and s.dtype == dtype for s in res.trajectory)
    # the exact endpoint (every method is exact for a constant velocity on a Lie group)
    err = _close(manifold, res.x, exact)
    if manifold is None and method != "euler":
        tol = ENDPOINT_TOL[method]
    assert err < tol, err
    if manifold is not None and not isinstance(manifold, Euclidean):
        assert torch.allclose(manifold.projx(res.x), res.x, atol=1e-5)
    # steps and grid together are an error, not a choice
    with pytest.raises(ValueError, match="either steps or grid"):
        solve(v, x0, method=method, steps=4, grid=[0.0, 0.5, 1.0], manifold=manifold)
    # inversion with the same code
    back = solve(v, res.x, method=method, steps=steps, t0=1.0, t1=0.0, manifold=manifold)
    assert back.times[0] == 1.0 and back.times[-1] == 0.0
    rel = _close(manifold, back.x, x0) / max(1.0, x0.abs().max().item())
    assert rel < max(INVERSE_TOL[method], 1e-5 if dtype == torch.float64 else 1e-4), rel


# ---- paths ------------------------------------------------------------------------------

def _path_cases():
    cases = {f"affine_{name}": (AffinePath(cls()), None) for name, cls in SCHEDULERS.items()}
    for name, m in {"euclid": Euclidean(3), "so3_quat": SO3Quaternion(),
                    "so3_matrix": SO3Matrix(), "se3": SE3}.items():  # fmt: skip
        cases[f"geodesic_{name}"] = (GeodesicPath(m), m)
    return cases


PATHS = _path_cases()
# tolerance for following x_t with 32 steps over [0, 0.9] (affine) or [0, 1] (geodesic)
FOLLOW_TOL = {"euler": 0.5, "midpoint": 2e-2, "heun": 2e-2, "rk4": 1e-4, "dopri5": 1e-3}


def _path_points(manifold, dtype):
    g = torch.Generator().manual_seed(3)
    if manifold is None:
        x0, x1 = torch.randn(2, B, 4, 3, generator=g)
    else:
        x0 = manifold.random_base(B, 4, generator=g)
        x1 = manifold.random_base(B, 4, generator=g)
    return x0.to(dtype), x1.to(dtype)


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_path_contract(name, dtype):
    path, manifold = PATHS[name]
    x0, x1 = _path_points(manifold, dtype)
    t = torch.rand(B, generator=torch.Generator().manual_seed(4)).to(dtype)
    s = path.sample(x0, x1, t)
    tangent_shape = x0.shape if manifold is None else (*x0.shape[:-1], manifold.tangent_dim)
    assert s.x_t.shape == x0.shape and s.x_t.dtype == dtype
    assert s.dx_t.shape == tangent_shape and s.dx_t.dtype == dtype
    assert torch.isfinite(s.x_t).all() and torch.isfinite(s.dx_t).all()
    dist = (lambda a, b: (a - b).abs().max().item()) if manifold is None else (
        lambda a, b: manifold.dist(a, b).max().item()
    )
    ones = torch.ones(B, dtype=dtype)
    assert dist(path.sample(x0, x1, ones).x_t, x1) < 1e-4
    if not name.startswith("affine_vp"):  # VP's alpha_0 is small but not 0, by design
        assert dist(path.sample(x0, x1, 0 * ones).x_t, x0) < 1e-5


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("method", SOLVERS)
def test_path_velocity_integrates_to_path(name, method):
    """Solving dx/dt = dx_t(t) from x_t(t0) with every solver reproduces x_t on the grid."""
    path, manifold = PATHS[name]
    x0, x1 = _path_points(manifold, torch.float64)
    t_end = 1.0 if manifold is not None else 0.9  # VP's d sigma/dt is singular at t = 1

    def v(x, t):
        return path.sample(x0, x1, t.expand(B)).dx_t

    start = path.sample(x0, x1, torch.zeros(B, dtype=torch.float64)).x_t
    steps = 4 if method == "dopri5" else 32
    res = solve(v, start, method=method, steps=steps, t1=t_end, manifold=manifold,
                return_trajectory=True)  # fmt: skip
    for t_i, x_i in zip(res.times, res.trajectory):
        on_path = path.sample(x0, x1, t_i.expand(B)).x_t
        err = (x_i - on_path).abs().max() if manifold is None else manifold.dist(x_i, on_path).max()
        assert err < FOLLOW_TOL[method], (name, method, float(t_i), float(err))


# ---- conditional fields (contributed by core-flows) ----------------------------------------
# For a fixed pair (x_0, x_1) the conditional field whose flow is the path itself is
#   affine:   u(x, t) = alpha' x_1 + sigma' (x - alpha x_1) / sigma,
#   geodesic: u(x, t) = kappa' log_x(x_1) / (1 - kappa),
# so solving dx/dt = u from the path's start must land on path.sample(x_0, x_1, t1).x_t
# (t1 = 0.95 stays clear of sigma = 0), and doubling the steps must cut the error by about
# 2^order unless it is already at round-off (straight paths are exact for every method).

COND_T1 = 0.95
COND_STEPS = 40
COND_TOL = {"euler": 5e-2, "midpoint": 5e-3, "heun": 5e-3, "rk4": 1e-4, "dopri5": 1e-4}


def _cond_quats(n, g):
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


def _cond_cases():
    g = torch.Generator().manual_seed(1)
    se3 = Product([Euclidean(3), SO3Quaternion()])
    se3_0 = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64), _cond_quats(6, g)], -1)
    se3_1 = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64), _cond_quats(6, g)], -1)
    return {
        "affine-linear": _affine_case(LinearScheduler()),
        "affine-cosine": _affine_case(CosineScheduler()),
        "affine-vp": _affine_case(VPScheduler()),
        "geodesic-euclidean": _geodesic_case(
            Euclidean(3), torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.randn(5, 3, generator=g, dtype=torch.float64)),
        "geodesic-so3": _geodesic_case(SO3Quaternion(), _cond_quats(5, g), _cond_quats(5, g)),
        "geodesic-se3": _geodesic_case(se3, se3_0, se3_1),
    }  # fmt: skip


COND_CASES = _cond_cases()


@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("name", sorted(COND_CASES))
def test_every_solver_follows_every_path(name, method):
    path, x_0, x_1, u, manifold = COND_CASES[name]
    target = path.sample(x_0, x_1, torch.full((x_0.shape[0],), COND_T1, dtype=x_0.dtype))
    assert isinstance(target, PathSample)
    # the path's start (VP's alpha_0 is ~6.6e-3, not 0, so x_t at t = 0 is not exactly x_0)
    start = path.sample(x_0, x_1, torch.zeros(x_0.shape[0], dtype=x_0.dtype)).x_t

    def error(**kwargs):
        out = solve(u, start, method=method, t1=COND_T1, manifold=manifold, **kwargs)
        assert out.nfe > 0 and out.x.shape == x_0.shape
        if manifold is None:
            return float((out.x - target.x_t).abs().max())
        return float(manifold.logmap(target.x_t, out.x).abs().max())

    if method == "dopri5":
        err = error(atol=1e-7, rtol=1e-7)
        assert err < COND_TOL[method], f"{name} / {method}: error {err:.2e}"
        return
    coarse, fine = error(steps=COND_STEPS // 2), error(steps=COND_STEPS)
    assert fine < COND_TOL[method], f"{name} / {method}: error {fine:.2e}"
    if fine > 1e-10:
        rate = coarse / fine
        assert rate > 0.6 * 2 ** METHOD_ORDER[method], f"{name} / {method}: rate {rate:.2f}"
