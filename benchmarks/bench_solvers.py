"""Solver overhead: flow3d's ``solve`` against facebookresearch/flow_matching's ``ODESolver``.

Same 2-layer MLP velocity (width 512) on a batch of 4096 2D states, 100 Euler and 100
midpoint steps, both under ``torch.no_grad``, interleaved in one process; the median of
``--repeats`` timed runs after a warm-up. ``ODESolver`` is installed only for this benchmark
(``pip install flow_matching --no-deps``); when it is missing, torchdiffeq's fixed-grid
``odeint`` (which ``ODESolver`` calls) is measured instead and labelled so.

The "bare model" column is the time of the same number of bare velocity calls: what a solver
with zero overhead would take. Rows marked "identity" repeat the comparison with
``v(x, t) = x`` (no compute), which isolates the per-step overhead of each solver.
``python -m benchmarks.bench_solvers [--repeats 7] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from flow3d.core.solvers import solve


class IdentityVelocity(nn.Module):
    """``v(x, t) = x``: no compute, so the timing is pure solver overhead."""

    calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        self.calls += 1
        return x


class MLPVelocity(nn.Module):
    """``v(x, t) = W2 silu(W1 [x, t])``: 2 layers, width 512; accepts keywords (ODESolver)."""

    def __init__(self, dim: int = 2, width: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, dim))
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        self.calls += 1
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return self.net(torch.cat([x, t.expand(x.shape[0], 1)], dim=1))


def _theirs(model: MLPVelocity):
    """A callable ``(x, method, steps) -> x_1`` from flow_matching, or torchdiffeq."""
    try:
        from flow_matching.solver import ODESolver

        solver = ODESolver(velocity_model=model)

        def run(x, method, steps):
            grid = torch.tensor([0.0, 1.0], device=x.device)
            return solver.sample(x, step_size=1.0 / steps, method=method, time_grid=grid)

        return "flow_matching ODESolver", run
    except ImportError:
        from torchdiffeq import odeint

        def run(x, method, steps):
            grid = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
            with torch.no_grad():
                return odeint(lambda t, y: model(y, t), x, grid, method=method)[-1]

        return "torchdiffeq odeint (flow_matching not installed)", run


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _compare(model, theirs, x, method: str, steps: int, repeats: int):
    """(NFE ours, NFE theirs, median ours, median theirs, median bare, min ratio, max diff)."""
    nfe = {"euler": 1, "midpoint": 2}[method] * steps

    def ours():
        return solve(model, x, method=method, steps=steps).x

    def bare():
        t = torch.tensor(0.5)
        with torch.no_grad():
            for _ in range(nfe):
                model(x, t)

    def other():
        return theirs(x, method, steps)

    for fn in (ours, other, bare):  # warm-up
        fn()
    model.calls = 0
    ours()
    nfe_ours = model.calls
    model.calls = 0
    other()
    nfe_theirs = model.calls
    diff = (ours() - other()).abs().max().item()
    t_ours, t_theirs, t_bare = [], [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits all three alike
        t_ours += _time(ours, 1)
        t_theirs += _time(other, 1)
        t_bare += _time(bare, 1)
    return (nfe_ours, nfe_theirs, statistics.median(t_ours), statistics.median(t_theirs),
            statistics.median(t_bare), min(t_ours) / min(t_theirs), diff)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 2)
    rows, label = [], ""
    for model_name, model in (("MLP", MLPVelocity().eval()), ("identity", IdentityVelocity())):
        label, theirs = _theirs(model)
        for method in ("euler", "midpoint"):
            result = _compare(model, theirs, x, method, args.steps, args.repeats)
            rows.append((f"{method} ({model_name})", *result))

    print("## Solver overhead (bench_solvers)\n")
    print(f"Ours: `flow3d.core.solvers.solve`; theirs: {label}. 2-layer MLP velocity "
          f"(width 512) or identity velocity, batch {args.batch} x 2, {args.steps} steps, "
          f"median of {args.repeats} interleaved runs, {args.threads} CPU thread(s), "
          "no_grad.\n")  # fmt: skip
    print("| method (velocity) | NFE ours / theirs | ours (ms) | theirs (ms) | bare model (ms) "
          "| ours / theirs (median) | ours / theirs (min) | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for method, n_o, n_t, m_o, m_t, m_b, r_min, diff in rows:
        print(f"| {method} | {n_o} / {n_t} | {1e3 * m_o:.2f} | {1e3 * m_t:.2f} | "
              f"{1e3 * m_b:.2f} | {m_o / m_t:.3f} | {r_min:.3f} | {diff:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
