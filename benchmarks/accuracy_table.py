"""Accuracy versus NFE of every solver on the analytic Gaussian-mixture flow (and on SO(3)).

Euclidean case: ``N(0, I) -> `` eight Gaussians in 2D (radius 2, std 0.5), the exact marginal
rectified-flow velocity of :class:`flow3d.core.analytic.GaussianMixtureFlow`, 256 starts in
float64, error = mean Euclidean distance to the float64 DOP853 reference endpoint (rtol 1e-12).
The fitted order is the negative log-log slope of error against NFE over NFE 4..256.
dopri5 is adaptive, so it is listed by tolerance with the NFE it spent.

SO(3) case: a state-dependent body angular velocity on unit quaternions integrated with the
Runge-Kutta-Munthe-Kaas steps; error = max geodesic angle to a dopri5 reference at 1e-12.

``python -m benchmarks.accuracy_table [--points 256]`` prints markdown; :func:`accuracy_table`
returns the rows.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from flow3d.core import so3
from flow3d.core.analytic import GaussianMixtureFlow
from flow3d.core.manifolds import SO3Quaternion
from flow3d.core.solvers import METHOD_ORDER, solve

NFES = (4, 8, 16, 32, 64, 128, 256)
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
F64 = torch.float64


def _order(nfes, errs) -> float:
    return float(-np.polyfit(np.log(nfes), np.log(errs), 1)[0])


def accuracy_table(points: int = 256, seed: int = 0) -> dict:
    """Errors of every solver; returns ``{"fixed": {method: [err per NFE]}, "order": {...},
    "dopri5": [(tol, nfe, err)], "so3": {method: [err per NFE]}, "so3_order": {...}}``."""
    gmm = GaussianMixtureFlow.ring(k=8, radius=2.0, std=0.5)
    x0 = gmm.sample_source(points, generator=torch.Generator().manual_seed(seed), dtype=F64)
    ref = gmm.endpoint(x0)
    out: dict = {"fixed": {}, "order": {}, "dopri5": [], "so3": {}, "so3_order": {}}
    for method, per in STAGES.items():
        errs = []
        for nfe in NFES:
            res = solve(gmm, x0, method=method, steps=nfe // per)
            errs.append((res.x - ref).norm(dim=-1).mean().item())
        out["fixed"][method] = errs
        out["order"][method] = _order(NFES, errs)
    for tol in TOLS:
        res = solve(gmm, x0, method="dopri5", atol=tol, rtol=tol)
        out["dopri5"].append((tol, res.nfe, (res.x - ref).norm(dim=-1).mean().item()))

    g = torch.Generator().manual_seed(seed + 1)
    q0 = so3.random_quat(64, generator=g, dtype=F64)
    a, b = torch.randn(2, 64, 3, generator=g, dtype=F64)

    def body_velocity(q, t):  # a world-frame spin seen in the body frame: depends on q
        return so3.quat_apply(so3.quat_conj(q), a * torch.cos(2 * t) + b * t) + 0.5 * b

    m = SO3Quaternion()
    q_ref = solve(body_velocity, q0, method="dopri5", manifold=m, atol=1e-12, rtol=1e-12).x
    for method, per in STAGES.items():
        errs = [
            m.dist(solve(body_velocity, q0, method=method, steps=nfe // per, manifold=m).x, q_ref)
            .max()
            .item()
            for nfe in NFES
        ]
        out["so3"][method] = errs
        out["so3_order"][method] = _order(NFES[2:], errs[2:])  # asymptotic range, NFE >= 16
    return out


def to_markdown(t: dict, points: int) -> str:
    head = "| method | " + " | ".join(f"NFE {n}" for n in NFES) + " | fitted order | nominal |"
    sep = "|---" * (len(NFES) + 3) + "|"
    lines = [
        "## Solver accuracy versus NFE (accuracy_table)\n",
        f"Eight-Gaussian rectified flow, exact marginal velocity, {points} float64 starts; mean "
        "distance to the DOP853 reference endpoint (rtol 1e-12). Order = -slope of log error "
        "vs log NFE over NFE 4..256.\n",
        head,
        sep,
    ]
    for method, errs in t["fixed"].items():
        cells = " | ".join(f"{e:.2e}" for e in errs)
        lines.append(f"| {method} | {cells} | {t['order'][method]:.2f} | {METHOD_ORDER[method]} |")
    lines += ["", "| dopri5 rtol = atol | NFE | mean error |", "|---|---|---|"]
    lines += [f"| {tol:.0e} | {nfe} | {err:.2e} |" for tol, nfe, err in t["dopri5"]]
    lines += [
        "",
        "SO(3), unit quaternions, Runge-Kutta-Munthe-Kaas steps, state-dependent body velocity, "
        "64 rotations; max geodesic angle (rad) to a dopri5 reference at 1e-12; order fitted "
        "over NFE 16..256.\n",
        head,
        sep,
    ]
    for method, errs in t["so3"].items():
        cells = " | ".join(f"{e:.2e}" for e in errs)
        lines.append(
            f"| {method} | {cells} | {t['so3_order'][method]:.2f} | {METHOD_ORDER[method]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(to_markdown(accuracy_table(args.points), args.points))


if __name__ == "__main__":
    main()
