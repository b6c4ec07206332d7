"""ODE solvers for velocity fields on Euclidean and manifold states.

One entry point, :func:`solve`, integrates ``dx/dt = velocity(x, t)`` from ``t0`` to ``t1``
(``t0 > t1`` or a descending grid integrates backwards: inversion uses the same code).

Methods (explicit Runge-Kutta; ``NFE`` = velocity evaluations):

============  =====  ==============  =====================================================
method        order  NFE per step    notes
============  =====  ==============  =====================================================
``euler``     1      1
``midpoint``  2      2               the RF-Solver step (Wang et al. 2024, eq. 9):
                                     ``x + h v + h^2/2 (v_mid - v)/(h/2)`` with
                                     ``v_mid = v(x + h/2 v, t + h/2)`` equals the explicit
                                     midpoint rule ``x + h v_mid``
``heun``      2      2               explicit trapezoid
``rk4``       4      4               classical Runge-Kutta
``dopri5``    5(4)   6 (FSAL) + 2    Dormand & Prince (1980), adaptive step size with
                                     the embedded 4th-order error estimate and
                                     Hairer's initial step (Hairer et al. I, II.4)
============  =====  ==============  =====================================================

Manifold states (``manifold=`` a :class:`~flow3d.core.manifolds.Manifold` that is not
Euclidean) use Runge-Kutta-Munthe-Kaas stepping (Munthe-Kaas 1999; Iserles et al. 2000,
Alg. 2): stage ``i`` evaluates the velocity at ``Y_i = expmap(x, sigma_i)`` with
``sigma_i = h sum_j a_ij k_j``, converts it to the algebra with ``k_i = dexpinv(sigma_i, v_i)``,
and the step is ``x <- projx(expmap(x, h sum_i b_i k_i))``. With the exact ``dexpinv`` of
SO(3) (the inverse right Jacobian) every method keeps its Euclidean order on SO(3) and SE(3)
(measured in tests/core/test_core_solvers.py); on a manifold whose ``dexpinv`` is the
identity (the default) methods of order > 2 drop to order 2.

Numerics: the state is accumulated in float32 (float64 stays float64); the velocity is
called with the state cast back to the input dtype and ``t`` as a 0-dim float32 tensor on the
state's device (float64 when the state is float64, so that time does not cap the accuracy).
Fixed-step loops precompute every stage time, so they never synchronise with the device;
they run under ``torch.no_grad()`` unless ``enable_grad=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.core.manifolds import Euclidean, Manifold
from flow3d.errors import ConfigError

__all__ = [
    "METHOD_ORDER", "SOLVERS", "SolveOptionError", "SolveOptions", "SolveResult", "solve",
]


class SolveOptionError(ConfigError, ValueError):
    """A bad solver option (method, steps, grid, t0/t1): a ValueError for code, and a
    one-line :class:`~flow3d.errors.ConfigError` when it came from a recipe or the CLI."""

Velocity = Callable[[Tensor, Tensor], Tensor]
Hook = Callable[[Tensor, Tensor, int], Tensor]

SOLVERS = ("euler", "midpoint", "heun", "rk4", "dopri5")
METHOD_ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 5}


@dataclass
class SolveResult:
    """``x``: the state at the final time (input dtype); ``nfe``: velocity evaluations;
    ``times``: ``[T]`` the times of the grid (fixed step) or of the accepted steps (dopri5
    without grid), float32 (float64 for a float64 state); ``trajectory``: the ``T`` states
    at ``times`` when requested."""

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None = None


@dataclass(frozen=True)
class _Tableau:
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # a[i] has i entries (explicit method)
    b: tuple[float, ...]


_FIXED = {
    "euler": _Tableau(c=(0.0,), a=((),), b=(1.0,)),
    "midpoint": _Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0)),
    "heun": _Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5)),
    "rk4": _Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    ),
}

# Dormand-Prince 5(4): b is the 5th-order solution (== the last row of a, hence FSAL), e the
# difference to the embedded 4th-order weights.
_DP5 = _Tableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
)
_DP5_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP5_E = tuple(b5 - b4 for b5, b4 in zip(_DP5.b, _DP5_B4))


# ---- one Runge-Kutta step ----------------------------------------------------------------


def _axpy(x: Tensor, coeffs: Sequence[float], ks: Sequence[Tensor], h: float) -> Tensor:
    """``x + h sum_j coeffs[j] ks[j]`` (zero coefficients skipped, no extra buffers)."""
    for a, k in zip(coeffs, ks):
        if a != 0.0:
            x = x.add(k, alpha=a * h)
    return x


def _lincomb(coeffs: Sequence[float], ks: Sequence[Tensor], h: float) -> Tensor | None:
    """``h sum_j coeffs[j] ks[j]``, or None when every coefficient is zero."""
    out = None
    for a, k in zip(coeffs, ks):
        if a != 0.0:
            out = k * (a * h) if out is None else out.add(k, alpha=a * h)
    return out


def _stages_euclid(f, x: Tensor, ts: Sequence[Tensor], h: float, tab: _Tableau, k1=None):
    ks: list[Tensor] = []
    for i, row in enumerate(tab.a):
        if i == 0 and k1 is not None:
            ks.append(k1)
            continue
        ks.append(f(_axpy(x, row, ks, h), ts[i]))
    return ks


def _stages_lie(f, x: Tensor, ts: Sequence[Tensor], h: float, tab: _Tableau, m: Manifold, k1=None):
    """RKMK stages: returns (algebra stages k_i, raw velocity of the last stage)."""
    ks: list[Tensor] = []
    v = k1
    for i, row in enumerate(tab.a):
        if i == 0:
            v = k1 if k1 is not None else f(x, ts[0])
            ks.append(v)
            continue
        sigma = _lincomb(row, ks, h)
        if sigma is None:
            v = f(x, ts[i])
            ks.append(v)
        else:
            v = f(m.expmap(x, sigma), ts[i])
            ks.append(m.dexpinv(sigma, v))
    return ks, v


# ---- grid handling -----------------------------------------------------------------------


def _make_grid(steps, grid, t0: float, t1: float) -> list[float] | None:
    """The fixed time grid as Python floats (None: adaptive without output grid)."""
    if steps is not None and grid is not None:
        raise SolveOptionError("give either steps or grid, not both")
    if grid is not None:
        g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        if g.ndim != 1 or len(g) < 2:
            raise SolveOptionError(f"grid must be 1-D with >= 2 times, got shape {tuple(g.shape)}")
        if not torch.isfinite(g).all():
            raise SolveOptionError("grid contains non-finite times")
        d = g.diff()
        if not ((d > 0).all() or (d < 0).all()):
            raise SolveOptionError("grid must be strictly increasing or strictly decreasing")
        return g.tolist()
    if steps is None:
        return None
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise SolveOptionError(f"steps must be a positive integer, got {steps!r}")
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        raise SolveOptionError(f"t0 and t1 must differ, got {t0}")
    g = torch.linspace(t0, t1, int(steps) + 1, dtype=torch.float64)
    g[0], g[-1] = t0, t1
    return g.tolist()


# ---- the solver --------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveOptions:
    """How :func:`solve` runs, apart from where it goes (method, times, manifold).

    Given to ``solve`` as keywords (``solve(v, x, steps=8, hooks=[h])``); an unknown keyword
    is a TypeError, as for any signature.

    Attributes:
        hooks: ``hook(x, t_next, step) -> x`` called after each step (``step`` is the 0-based
            index of the step just taken); e.g. inpainting or optimiser guidance.
        atol, rtol: dopri5 error tolerances (per element; on a manifold the tangent error is
            measured against ``atol + rtol``, i.e. a unit reference magnitude).
        return_trajectory: also return the state at every time of ``times``.
        progress: show a tqdm progress bar.
        enable_grad: run with autograd enabled (default: ``torch.no_grad()``).
        max_steps: dopri5 gives up (RuntimeError) after this many step attempts.
    """

    hooks: Sequence[Hook] = ()
    atol: float = 1e-5
    rtol: float = 1e-5
    return_trajectory: bool = False
    progress: bool = False
    enable_grad: bool = False
    max_steps: int = 100_000


def solve(
    velocity: Velocity,
    x_init: Tensor,
    *,
    method: str = "euler",
    steps: int | None = None,
    grid: Tensor | Sequence[float] | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    manifold: Manifold | None = None,
    **options,
) -> SolveResult:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t0`` to ``t1``.

    Args:
        velocity: ``velocity(x, t) -> v`` with ``x`` shaped like ``x_init`` and ``t`` a 0-dim
            float32 tensor (float64 if ``x_init`` is float64); ``v`` has the shape of ``x``
            (Euclidean) or of a tangent (``[..., manifold.tangent_dim]``).
        x_init: the start state ``[B, ...]`` (points ``[..., manifold.point_dim]``).
        method: one of :data:`SOLVERS`.
        steps: number of uniform steps from ``t0`` to ``t1`` (fixed-step methods need steps or
            grid); for ``dopri5`` it sets output times that the adaptive stepper stops at.
        grid: explicit strictly monotonic times (overrides ``t0``/``t1``); a descending grid
            integrates backwards. ``steps`` and ``grid`` together is an error.
        manifold: the state space; ``None`` or :class:`Euclidean` is plain R^n.
        **options: the fields of :class:`SolveOptions` (``hooks``, ``atol``, ``rtol``,
            ``return_trajectory``, ``progress``, ``enable_grad``, ``max_steps``).
    """
    opts = SolveOptions(**options)
    if method not in SOLVERS:
        raise SolveOptionError(f"unknown solver {method!r}; choose one of {SOLVERS}")
    if not isinstance(x_init, Tensor):
        raise TypeError(f"x_init must be a torch.Tensor, got {type(x_init).__name__}")
    lie = manifold is not None and not isinstance(manifold, Euclidean)
    if manifold is not None:
        manifold.check_point(x_init, "x_init")
    times = _make_grid(steps, grid, t0, t1)
    if method != "dopri5" and times is None:
        raise SolveOptionError(f"method {method!r} needs steps or grid")

    in_dtype = x_init.dtype
    state_dtype = torch.promote_types(in_dtype, torch.float32)
    v_shape = x_init.shape
    if lie:
        v_shape = torch.Size((*x_init.shape[:-1], manifold.tangent_dim))
    nfe = 0

    def f(y: Tensor, t: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        v = velocity(y if y.dtype == in_dtype else y.to(in_dtype), t)
        if v.shape != v_shape:
            raise ValueError(
                f"velocity returned shape {tuple(v.shape)}, expected {tuple(v_shape)}"
            )
        # a half-precision model output is widened so that stage sums are float32
        return v if v.dtype == state_dtype else v.to(state_dtype)

    ctx = torch.enable_grad() if opts.enable_grad else torch.no_grad()
    with ctx:
        x = x_init.to(state_dtype)
        traj = [x.clone() if x is x_init else x] if opts.return_trajectory else None
        m = manifold if lie else None
        if method == "dopri5":
            t_range = (float(t0), float(t1)) if times is None else (times[0], times[-1])
            x, out_times = _dopri5(f, x, times, t_range, m, traj, opts)
        else:
            x = _fixed(f, x, times, _FIXED[method], m, opts.hooks, traj, opts.progress)
            out_times = times
    times_t = torch.tensor(out_times, dtype=_time_dtype(x), device=x_init.device)
    if traj is not None:
        traj = [s.to(in_dtype) for s in traj]
    return SolveResult(x=x.to(in_dtype), nfe=nfe, times=times_t, trajectory=traj)


def _time_dtype(x: Tensor) -> torch.dtype:
    # float32, except that a float64 state gets float64 times (else t limits accuracy to 1e-8)
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _progress_bar(enabled: bool, total, desc: str):
    if not enabled:
        return nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _fixed(f, x, grid: list[float], tab: _Tableau, m, hooks, traj, progress) -> Tensor:
    n = len(grid) - 1
    g = torch.tensor(grid, dtype=torch.float64)
    h = g.diff()  # [n]
    c = torch.tensor(tab.c, dtype=torch.float64)
    stage_t = (g[:-1, None] + c[None, :] * h[:, None]).to(x.device, _time_dtype(x))  # [n, S]
    ts = [row.unbind(0) for row in stage_t.unbind(0)]
    t_next = torch.tensor(grid[1:], dtype=_time_dtype(x), device=x.device).unbind(0)
    hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    with _progress_bar(progress, n, "solve") as bar:
        for i in range(n):
            if m is None:
                ks = _stages_euclid(f, x, ts[i], hs[i], tab)
                x = _axpy(x, tab.b, ks, hs[i])
            else:
                ks, _ = _stages_lie(f, x, ts[i], hs[i], tab, m)
                x = m.projx(m.expmap(x, _lincomb(tab.b, ks, hs[i])))
            for hook in hooks:
                out = hook(x, t_next[i], i)
                x = x if out is None else out
            if traj is not None:
                traj.append(x)
            if bar is not None:
                bar.update(1)
    return x


def _rms(x: Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


def _dopri5(f, x, out_grid, t_range, m, traj, opts: SolveOptions):
    """Adaptive Dormand-Prince 5(4) with FSAL from ``t_range = (t0, t1)``, stopping at every
    time of ``out_grid`` when given; returns (x, recorded times)."""
    t0, t1 = t_range
    atol, rtol, max_steps, hooks = opts.atol, opts.rtol, opts.max_steps, opts.hooks
    if out_grid is not None:
        stops = out_grid[1:]
    else:
        if t0 == t1:
            raise SolveOptionError(f"t0 and t1 must differ, got {t0}")
        stops = [t1]
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    dev = x.device

    def tt(t: float) -> Tensor:
        return torch.tensor(t, dtype=_time_dtype(x), device=dev)

    def scale(a: Tensor, b: Tensor | None = None):
        if m is not None:  # tangent errors against a unit reference magnitude
            return atol + rtol
        mag = a.abs() if b is None else torch.maximum(a.abs(), b.abs())
        return atol + rtol * mag

    def advance(x, u):
        return x + u if m is None else m.projx(m.expmap(x, u))

    # Hairer, Norsett & Wanner I, II.4: initial step from the local Lipschitz estimate.
    k1 = f(x, tt(t0))
    sc = scale(x)
    d0 = _rms(x / sc) if m is None else 1.0 / sc
    d1 = _rms(k1 / sc)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    k1b = f(advance(x, direction * h0 * k1), tt(t0 + direction * h0))
    d2 = _rms((k1b - k1) / sc) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / 5.0)
    h = min(100.0 * h0, h1, span)

    t = t0
    times = [t0]
    stop_i = 0
    attempts = accepted = 0
    with _progress_bar(opts.progress, span, "dopri5") as bar:
        while stop_i < len(stops):
            t_stop = stops[stop_i]
            remaining = abs(t_stop - t)
            hit = h >= remaining * (1.0 - 1e-12)
            step = remaining if hit else h
            hd = direction * step
            ts = [tt(t + ci * hd) for ci in _DP5.c]
            if m is None:
                ks = _stages_euclid(f, x, ts, hd, _DP5, k1=k1)
                # b == a[6]: stage 7 was evaluated at x_new (first same as last)
                x_new = _axpy(x, _DP5.b, ks, hd)
                v_last = ks[-1]
                err_norm = _rms(_lincomb(_DP5_E, ks, hd) / scale(x, x_new))
            else:
                ks, v_last = _stages_lie(f, x, ts, hd, _DP5, m, k1=k1)
                x_new = advance(x, _lincomb(_DP5.b, ks, hd))
                err_norm = _rms(_lincomb(_DP5_E, ks, hd) / scale(x))
            attempts += 1
            if not math.isfinite(err_norm):
                raise RuntimeError(f"dopri5: non-finite error estimate at t={t:.6g}")
            ok = err_norm <= 1.0
            if ok:
                t = t_stop if hit else t + hd
                x, k1 = x_new, v_last
                if hit:
                    stop_i += 1
                if hooks:
                    for hook in hooks:
                        out = hook(x, tt(t), accepted)
                        x = x if out is None else out
                    k1 = f(x, tt(t))  # the hook moved x: FSAL value is stale
                if traj is not None and (out_grid is None or hit):
                    traj.append(x)
                if out_grid is None or hit:
                    times.append(t)
                if bar is not None:
                    bar.update(step)
                accepted += 1
            if attempts >= max_steps:
                raise RuntimeError(f"dopri5: no convergence after {max_steps} step attempts")
            factor = 10.0 if err_norm == 0.0 else min(10.0, max(0.2, 0.9 * err_norm**-0.2))
            # a step shortened to land on a stop says little about the next one: keep h
            h = max(h, step * factor) if (ok and hit) else step * factor
    return x, times
