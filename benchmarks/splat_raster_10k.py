"""Issue 14's <= 250 ms check in one short loop: 10k Gaussians on a bumpy sphere (the scene of
bench_splat_raster), 4 cameras at 128², cpu backend, forward + backward, median wall time.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 python -m benchmarks.splat_raster_10k 2
"""
import statistics
import sys
import time

import torch

from flow3d.splat import Cameras, Gaussians, render

threads = int(sys.argv[1]); torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
n = 10_000
d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
means = d * (1 + 0.1 * torch.rand(n, 1, generator=g))
scene = Gaussians(means, torch.randn(n, 4, generator=g), torch.log(0.01 + 0.03 * torch.rand(n, 3, generator=g)),
                  torch.randn(n, generator=g) + 1, torch.randn(n, 4, 3, generator=g) * 0.3)
cams = Cameras.orbit(4, radius=3.0, width=128, height=128, fov_deg=40.0)
w = torch.rand(4, 128, 128, 3, generator=g)
times = []
for i in range(12):
    s = scene.clone().requires_grad_()
    t = time.perf_counter()
    out = render(s, cams, backend="cpu")
    ((out.rgb * w).sum() + out.alpha.sum() + out.depth.sum()).backward()
    times.append(time.perf_counter() - t)
print(f"threads {threads}: median wall {statistics.median(times[2:])*1000:.0f} ms over {len(times)-2} steps")
