"""Issue 14's <= 250 ms check in one short loop: 10k Gaussians on a bumpy sphere (the scene of
bench_splat_raster), 4 cameras at 128², cpu backend, forward + backward, median wall time.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 python -m benchmarks.splat_raster_10k 2
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from flow3d.splat import Cameras, Gaussians, render


def scene(n: int = 10_000) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * (1 + 0.1 * torch.rand(n, 1, generator=g))
    log_scales = torch.log(0.01 + 0.03 * torch.rand(n, 3, generator=g))
    return Gaussians(means, torch.randn(n, 4, generator=g), log_scales,
                     torch.randn(n, generator=g) + 1, torch.randn(n, 4, 3, generator=g) * 0.3)


def main(threads: int, steps: int = 12, warmup: int = 2) -> float:
    torch.set_num_threads(threads)
    base = scene()
    cams = Cameras.orbit(4, radius=3.0, width=128, height=128, fov_deg=40.0)
    weight = torch.rand(4, 128, 128, 3, generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(steps):
        s = base.clone().requires_grad_()
        t = time.perf_counter()
        out = render(s, cams, backend="cpu")
        ((out.rgb * weight).sum() + out.alpha.sum() + out.depth.sum()).backward()
        times.append(time.perf_counter() - t)
    median = statistics.median(times[warmup:])
    print(f"threads {threads}: median wall {median * 1000:.0f} ms over {steps - warmup} steps")
    return median


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
