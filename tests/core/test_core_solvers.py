"""flow3d.core.solvers: measured order on the analytic Gaussian-mixture flow, dopri5 accuracy,
inversion, Lie-group (RKMK) order on SO(3) and SE(3), hooks, grids, dtypes and errors."""

import math

import numpy as np
import pytest
import torch

from flow3d.core import so3
from flow3d.core.analytic import GaussianFlow, GaussianMixtureFlow
from flow3d.core.manifolds import Euclidean, Product, SO3Matrix, SO3Quaternion
from flow3d.core.solvers import METHOD_ORDER, SOLVERS, solve
from flow3d.errors import Flow3dError

F64 = torch.float64
NFES = [4, 8, 16, 32, 64, 128, 256]
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.fixture(scope="module")
def gmm_case():
    """Eight Gaussians (radius 2, std 0.5), 48 float64 starts and their reference endpoints."""
    gmm = GaussianMixtureFlow.ring(k=8, radius=2.0, std=0.5)
    x0 = gmm.sample_source(48, generator=torch.Generator().manual_seed(0), dtype=F64)
    return gmm, x0, gmm.endpoint(x0)


def _slope(nfes, errs) -> float:
    return float(np.polyfit(np.log(nfes), np.log(errs), 1)[0])


@pytest.mark.parametrize(
    "method, band", [("euler", (0.85, 1.15)), ("midpoint", (1.75, 2.25)),
                     ("heun", (1.75, 2.25)), ("rk4", (3.5, 4.5))],
)  # fmt: skip
def test_measured_order_on_gaussian_mixture(gmm_case, method, band):
    gmm, x0, ref = gmm_case
    errs = []
    for nfe in NFES:
        res = solve(gmm, x0, method=method, steps=nfe // STAGES[method])
        assert res.nfe == nfe
        errs.append((res.x - ref).norm(dim=-1).mean().item())
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    order = -_slope(NFES, errs)
    assert band[0] <= order <= band[1], (method, order, errs)
    assert METHOD_ORDER[method] == round(order)


def test_dopri5_reaches_1e5_and_tightens_with_tolerance(gmm_case):
    gmm, x0, ref = gmm_case
    out = {}
    for tol in (1e-5, 1e-7):
        for dtype in (F64, torch.float32):
            res = solve(gmm, x0.to(dtype), method="dopri5", atol=tol, rtol=tol)
            out[tol, dtype] = ((res.x.double() - ref).abs().max().item(), res.nfe)
    # tolerances are per step (local): the global error at 1e-7 is below 1e-5 in every entry
    assert out[1e-7, F64][0] < 1e-5, out
    assert out[1e-7, torch.float32][0] < 1e-5, out  # float32 state, float32 field
    assert out[1e-5, F64][0] > out[1e-7, F64][0]
    assert out[1e-5, F64][1] < out[1e-7, F64][1] < 200
    # more accurate than Euler at several times the NFE
    nfe = out[1e-7, F64][1]
    euler = solve(gmm, x0, method="euler", steps=4 * nfe).x
    assert (euler - ref).abs().max().item() > 100 * out[1e-7, F64][0]


def test_dopri5_nfe_is_counted_exactly(gmm_case):
    gmm, x0, _ = gmm_case
    calls = []

    def v(x, t):
        calls.append(float(t))
        return gmm(x, t)

    res = solve(v, x0, method="dopri5")
    assert res.nfe == len(calls) > 0
    assert res.times[0] == 0 and res.times[-1] == 1
    assert all(0.0 <= c <= 1.0 for c in calls)


def test_inversion_midpoint_64_returns_start(gmm_case):
    gmm, x0, _ = gmm_case
    x1 = solve(gmm, x0, method="midpoint", steps=64).x
    back = solve(gmm, x1, method="midpoint", steps=64, t0=1.0, t1=0.0)
    rel = ((back.x - x0).norm() / x0.norm()).item()
    assert rel < 1e-3, rel
    # a descending explicit grid is the same thing
    grid = torch.linspace(1.0, 0.0, 65)
    back2 = solve(gmm, x1, method="midpoint", grid=grid)
    assert torch.allclose(back2.x, back.x, atol=1e-12)
    assert torch.equal(back2.times, back.times)


def test_float32_inversion_and_bf16_state_accumulates_in_float32():
    gmm = GaussianMixtureFlow.ring()
    x0 = gmm.sample_source(256, generator=torch.Generator().manual_seed(1))
    fwd = solve(gmm, x0, method="midpoint", steps=64)
    back = solve(gmm, fwd.x, method="midpoint", steps=64, t0=1.0, t1=0.0)
    assert ((back.x - x0).norm() / x0.norm()).item() < 1e-3
    seen = set()

    def v(x, t):
        seen.add((x.dtype, t.dtype, t.ndim))
        return gmm(x, t)

    res = solve(v, x0.bfloat16(), method="euler", steps=64)
    assert seen == {(torch.bfloat16, torch.float32, 0)}
    assert res.x.dtype == torch.bfloat16
    # accumulating 64 bf16 increments in bf16 would drift far more than one final rounding
    ref = solve(gmm, x0.bfloat16().float(), method="euler", steps=64).x
    assert (res.x.float() - ref).abs().max() < 0.1


def test_half_precision_velocity_on_so3_accumulates_in_float32():
    g = torch.Generator().manual_seed(8)
    q0 = so3.random_quat(16, generator=g)
    omega = (2.0 * torch.randn(16, 3, generator=g)).bfloat16()
    m = SO3Quaternion()
    res = solve(lambda x, t: omega, q0, method="rk4", steps=50, manifold=m)
    exact = so3.quat_mul(q0, so3.quat_exp(omega.float()))
    assert res.x.dtype == torch.float32
    assert m.dist(res.x, exact).max() < 1e-4  # bf16 stage sums would be off by ~1e-2


def test_gaussian_flow_closed_form_endpoint():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(3, 3, generator=g, dtype=F64)
    flow = GaussianFlow(torch.tensor([1.0, -2.0, 0.5]), A @ A.T + 0.2 * torch.eye(3, dtype=F64))
    x0 = torch.randn(32, 3, generator=g, dtype=F64)
    exact = flow.endpoint(x0)
    assert (solve(flow, x0, method="rk4", steps=64).x - exact).abs().max() < 1e-6
    # the closed form agrees with the generic high-accuracy reference
    assert (GaussianMixtureFlow.endpoint(flow, x0) - exact).abs().max() < 1e-9
    # and the flow map composes: 0 -> 0.3 -> 1 equals 0 -> 1
    assert torch.allclose(flow.endpoint(flow.endpoint(x0, 0.0, 0.3), 0.3, 1.0), exact)


def _so3_field(n=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, n, 3, generator=g, dtype=F64)

    def vel_q(q, t):  # body velocity of a world-frame spin, depends on the state
        w = a * torch.cos(2 * t) + b * t
        return so3.quat_apply(so3.quat_conj(q), w) + 0.5 * b

    def vel_R(R, t):
        w = a * torch.cos(2 * t) + b * t
        return (R.unflatten(-1, (3, 3)).transpose(-1, -2) @ w.unsqueeze(-1)).squeeze(-1) + 0.5 * b

    return so3.random_quat(n, generator=g, dtype=F64), vel_q, vel_R


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_lie_group_order_on_so3(method):
    q0, vel_q, vel_R = _so3_field()
    m = SO3Quaternion()
    ref = solve(vel_q, q0, method="dopri5", manifold=m, atol=1e-12, rtol=1e-12).x
    steps = [8, 16, 32, 64]
    errs = [m.dist(solve(vel_q, q0, method=method, steps=s, manifold=m).x, ref).max().item()
            for s in steps]  # fmt: skip
    order = -_slope(steps, errs)
    assert abs(order - METHOD_ORDER[method]) < 0.3, (method, order, errs)
    # the matrix representation follows the same path
    R = solve(vel_R, so3.quat_to_rotmat(q0).flatten(-2), method=method, steps=16,
              manifold=SO3Matrix()).x  # fmt: skip
    qR = solve(vel_q, q0, method=method, steps=16, manifold=m).x
    assert (R - so3.quat_to_rotmat(qR).flatten(-2)).abs().max() < 1e-10


def test_rk4_order_on_se3_product():
    q0, vel_q, _ = _so3_field(n=6, seed=4)
    m = Product([Euclidean(3), SO3Quaternion()])
    x0 = m.cat([torch.zeros(6, 3, dtype=F64), q0])

    def vel(x, t):  # translation driven by the rotating body axis: couples the factors
        p, q = m.split_point(x)
        dp = so3.quat_apply(q, torch.tensor([1.0, 0.0, 0.0], dtype=F64)) * (1 + t)
        return m.cat([dp, vel_q(q, t)])

    ref = solve(vel, x0, method="dopri5", manifold=m, atol=1e-12, rtol=1e-12).x
    steps = [8, 16, 32, 64]
    errs = [m.dist(solve(vel, x0, method="rk4", steps=s, manifold=m).x, ref).max().item()
            for s in steps]  # fmt: skip
    assert abs(-_slope(steps, errs) - 4) < 0.3, errs


def test_dopri5_on_so3_constant_velocity_is_exact_and_inverts():
    g = torch.Generator().manual_seed(5)
    q0 = so3.random_quat(10, generator=g)
    omega = 2.0 * torch.randn(10, 3, generator=g)
    m = SO3Quaternion()
    res = solve(lambda x, t: omega, q0, method="dopri5", manifold=m)
    assert m.dist(res.x, so3.quat_mul(q0, so3.quat_exp(omega))).max() < 1e-5
    back = solve(lambda x, t: omega, res.x, method="dopri5", manifold=m, t0=1.0, t1=0.0)
    assert m.dist(back.x, q0).max() < 1e-5
    assert torch.allclose(back.x.norm(dim=-1), torch.ones(10), atol=1e-6)


def test_trajectory_times_and_nonuniform_grid():
    flow = GaussianMixtureFlow.ring()
    x0 = flow.sample_source(16, generator=torch.Generator().manual_seed(6))
    grid = torch.tensor([0.0, 0.1, 0.3, 0.35, 0.8, 1.0])
    res = solve(flow, x0, method="heun", grid=grid, return_trajectory=True)
    assert res.nfe == 10
    assert torch.equal(res.times, grid)
    assert len(res.trajectory) == 6
    assert torch.equal(res.trajectory[0], x0) and res.trajectory[0] is not x0
    assert torch.equal(res.trajectory[-1], res.x)
    # dopri5 with steps: stops on that grid and records there
    res = solve(flow, x0, method="dopri5", steps=4, return_trajectory=True)
    assert torch.allclose(res.times, torch.linspace(0, 1, 5))
    assert len(res.trajectory) == 5


def test_hooks_run_after_every_step_and_can_replace_the_state():
    flow = GaussianMixtureFlow.ring()
    x0 = flow.sample_source(8, generator=torch.Generator().manual_seed(7))
    calls = []

    def clamp_first_coordinate(x, t_next, step):
        calls.append((round(float(t_next), 6), step))
        x = x.clone()
        x[:, 0] = 0.0
        return x

    res = solve(flow, x0, method="midpoint", steps=5, hooks=[clamp_first_coordinate])
    assert calls == [(0.2, 0), (0.4, 1), (0.6, 2), (0.8, 3), (1.0, 4)]
    assert (res.x[:, 0] == 0).all()
    calls.clear()
    res = solve(flow, x0, method="dopri5", hooks=[clamp_first_coordinate])
    assert calls and calls[-1][0] == 1.0 and (res.x[:, 0] == 0).all()
    assert [c[1] for c in calls] == list(range(len(calls)))  # one call per accepted step
    calls.clear()
    solve(flow, x0, method="dopri5", steps=4, hooks=[clamp_first_coordinate])
    assert [c[1] for c in calls] == list(range(len(calls))) and len(calls) >= 4


def test_no_grad_by_default_and_enable_grad():
    w = torch.tensor(1.5, requires_grad=True)
    state = {}

    def v(x, t):
        state["grad"] = torch.is_grad_enabled()
        return w * x

    x0 = torch.ones(4, 2)
    res = solve(v, x0, method="rk4", steps=4)
    assert state["grad"] is False and not res.x.requires_grad
    res = solve(v, x0, method="rk4", steps=20, enable_grad=True)
    (dw,) = torch.autograd.grad(res.x.sum(), w)  # d/dw of 8 e^w = 8 e^w
    assert abs(dw.item() - 8 * math.exp(1.5)) < 1e-3 * 8 * math.exp(1.5)


def test_progress_bar_runs():
    res = solve(lambda x, t: -x, torch.ones(3), method="euler", steps=3, progress=True)
    assert res.nfe == 3
    res = solve(lambda x, t: -x, torch.ones(3), method="dopri5", progress=True)
    assert abs(res.x[0].item() - math.exp(-1)) < 1e-4


def test_errors_are_clear():
    v = lambda x, t: x  # noqa: E731
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="either steps or grid"):
        solve(v, x, steps=4, grid=[0.0, 1.0])
    with pytest.raises(ValueError, match="needs steps or grid"):
        solve(v, x, method="rk4")
    with pytest.raises(ValueError, match="unknown solver"):
        solve(v, x, method="rk45", steps=3)
    with pytest.raises(ValueError, match="monotonic|increasing"):
        solve(v, x, grid=[0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="positive integer"):
        solve(v, x, steps=0)
    with pytest.raises(ValueError, match="velocity returned shape"):
        solve(lambda x, t: x[:, :2], x, steps=2)
    with pytest.raises(ValueError, match="last dimension 4"):
        solve(v, x, steps=2, manifold=SO3Quaternion())
    assert set(SOLVERS) == set(METHOD_ORDER)
    # option errors are also one-line user errors when they come from a recipe or the CLI
    with pytest.raises(Flow3dError, match="either steps or grid"):
        solve(v, x, steps=4, grid=[0.0, 1.0])


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_euclidean_fast_path_equals_generic_manifold_path(gmm_case, method):
    """The add-in-place Euclidean loop and the RKMK loop (through Product([Euclidean(2)]),
    whose expmap is x + u and dexpinv the identity) are twins: same numbers."""
    gmm, x0, _ = gmm_case
    fast = solve(gmm, x0, method=method, steps=10)
    generic = solve(gmm, x0, method=method, steps=10, manifold=Product([Euclidean(2)]))
    assert torch.allclose(fast.x, generic.x, atol=1e-13, rtol=0)
    assert fast.nfe == generic.nfe
