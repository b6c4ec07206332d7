"""Splat fitting benchmark (issue 14's bar): a CAPOD mesh rendered to a dataset
(``flow3d splat views``) and fitted by ``flow3d splat fit`` on the CPU for 2, 5 and 10 CPU
minutes (process CPU time, all threads: robust to other load on a shared machine);
held-out PSNR/SSIM after each budget, and whether the fitted PLY renders the same image with the
fast backend and the dense reference (PSNR between them, bar >= 40 dB). Also the peak memory of
one training step (forward, backward, Adam) with 100k Gaussians at 256^2.

    python -m benchmarks.bench_splat_fit                      # 2, 5, 10 CPU minutes
    python -m benchmarks.bench_splat_fit --jobs 3 --threads 1 # the budgets side by side
    python -m benchmarks.bench_splat_fit --minutes 2 --size 96
    python -m benchmarks.bench_splat_fit --memory-only

Each budget is its own run: ``--steps`` is set from the step rate measured in a short warm-up so
the learning-rate and densification schedules end near the budget, and ``max_cpu_minutes``
stops it at the budget in any case. Prints markdown on stdout; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT.parent / "shared" / "data" / "meshes" / "capod" / "class15" / "m169.obj"  # a car


def make_dataset(mesh: Path, out: Path, views: int, size: int) -> Path:
    from flow3d.splat.views import ViewsSettings, make_views

    return make_views(ViewsSettings(mesh=mesh, out=out, num=views, size=size)).parent


def fit_for(dataset: Path, out: Path, minutes: float, steps_per_minute: float,
            backend: str) -> dict:
    from flow3d.splat.fit import FitSettings, fit

    steps = max(200, int(steps_per_minute * minutes))
    s = FitSettings(dataset=dataset, out=out, steps=steps, backend=backend,
                    max_cpu_minutes=minutes, progress=False, checkpoint_every=0)
    return fit(s)


def step_rate(dataset: Path, backend: str, steps: int = 40) -> float:
    """Steps per CPU minute of the optimisation alone (the fit's ``cpu_seconds``; loading,
    initialisation and evaluation excluded) over the first ``steps`` steps, at the initial
    Gaussian count; scaled by 0.6 since density control adds Gaussians later."""
    from flow3d.splat.fit import FitSettings, fit

    with tempfile.TemporaryDirectory() as tmp:
        s = FitSettings(dataset=dataset, out=Path(tmp) / "warm.ply", steps=steps,
                        backend=backend, progress=False, checkpoint_every=0)
        return 0.6 * steps / (fit(s)["cpu_seconds"] / 60)


@torch.no_grad()
def backend_parity(scene_path: Path, dataset: Path) -> float:
    """Min over the dataset's held-out views of PSNR(fast render, dense reference render)."""
    from flow3d.splat.dataset import load_dataset
    from flow3d.splat.formats import load_scene
    from flow3d.splat.metrics import psnr
    from flow3d.splat.project import project
    from flow3d.splat.render import RenderSettings, rasterize_dense, render

    scene = load_scene(scene_path)
    _, test = load_dataset(dataset).split()
    settings = RenderSettings()
    worst = float("inf")
    for i in range(len(test)):
        cam = test.cameras[i]
        fast = render(scene, cam, backend="cpu", settings=settings).rgb
        p = project(scene, cam, near=settings.near, far=settings.far, eps2d=settings.eps2d)
        ref = rasterize_dense(p, cam, settings, pixel_chunk=128)[0]
        worst = min(worst, psnr(fast.clamp(0, 1), ref.clamp(0, 1)))
    return worst


MEMORY_CHILD = """
import resource, sys, torch
from flow3d.splat import Cameras, Gaussians, render
from flow3d.splat.density import SplatParams
n, size = int(sys.argv[1]), int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
g = torch.Generator().manual_seed(0)
pts = torch.randn(n, 3, generator=g) * 0.3
gs = Gaussians.from_points(pts, torch.rand(n, 3, generator=g), scale=0.01, opacity=0.5,
                           sh_degree=3)
p = SplatParams(gs, {k: 1e-3 for k in ("means", "quats", "log_scales", "opacity_logits",
                                        "sh0", "shN")})
cam = Cameras.orbit(1, radius=2.5, width=size, height=size)
for _ in range(2):
    out = render(p.gaussians(), cam, backend="cpu")
    out.projected.means2d.retain_grad()
    (out.rgb.mean() + out.alpha.mean()).backward()
    p.accumulate(out.projected, size, size)
    p.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, peak)
"""


def peak_memory(n: int = 100_000, size: int = 256) -> dict:
    """Peak resident memory (MiB) of a fresh process doing two training steps."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), str(size)], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    before, peak = (int(x) for x in out.stdout.split()[-2:])
    return {"gaussians": n, "size": size, "peak_mib": round(peak / 1024, 1),
            "step_mib": round((peak - before) / 1024, 1)}


def run_budgets(args, dataset: Path, tmp: Path) -> list[dict]:
    """Each budget in this process, or (``--jobs`` > 1) in child processes side by side."""
    if args.jobs <= 1:
        rate = step_rate(dataset, args.backend)
        runs = []
        for minutes in args.minutes:
            scene = tmp / f"scene_{minutes:g}.ply"
            m = fit_for(dataset, scene, minutes, rate, args.backend)
            m["minutes"] = minutes
            m["fast_vs_reference_psnr"] = round(backend_parity(scene, dataset), 2)
            runs.append(m)
            print(f"{minutes:g} CPU min: {m['steps']} steps, {m['num_gaussians']} Gaussians, "
                  f"test PSNR {m['test_psnr']} dB", file=sys.stderr, flush=True)
        return runs
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for minutes in args.minutes:
        out = tmp / f"runs_{minutes:g}.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_splat_fit", "--dataset", str(dataset),
               "--minutes", str(minutes), "--threads", str(args.threads), "--backend",
               args.backend, "--no-memory", "--json", str(out)]
        procs.append((out, subprocess.Popen(cmd, env=env, cwd=ROOT,
                                            stdout=subprocess.DEVNULL)))
    runs = []
    for out, proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"benchmark child failed: {proc.args}")
        runs += json.loads(out.read_text())["runs"]
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mesh", type=Path, default=MESH)
    ap.add_argument("--dataset", type=Path, help="use this dataset instead of rendering one")
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0, 5.0, 10.0],
                    help="CPU-minute budgets")
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per fit")
    ap.add_argument("--jobs", type=int, default=1, help="budgets run side by side")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"machine": platform.processor() or platform.machine(),
                     "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}
    if not args.memory_only:
        if args.dataset is None and not args.mesh.is_file():
            print(f"skipped: {args.mesh} not found (needs ../shared/data)")
            return
        with tempfile.TemporaryDirectory() as tmp:
            dataset = args.dataset or make_dataset(args.mesh, Path(tmp) / "data", args.views,
                                                   args.size)
            results["runs"] = run_budgets(args, dataset, Path(tmp))
    if not args.no_memory:
        results["memory"] = peak_memory()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n## Splat fitting (CPU, {results['threads']} threads per fit, load "
          f"{results['load']:.1f} at the start)\n")
    if "runs" in results:
        source = args.dataset or f"{args.mesh.parent.name}/{args.mesh.name}"
        print(f"{source}, {args.views} views at {args.size}^2 (every 8th held out), backend "
              f"{args.backend}\n")
        print("| CPU budget | steps | Gaussians | wall s | test PSNR | test SSIM | train PSNR | "
              "fast vs reference PSNR |")
        print("|---|---|---|---|---|---|---|---|")
        for m in results["runs"]:
            print(f"| {m['minutes']:g} min | {m['steps']} | {m['num_gaussians']} | "
                  f"{m['seconds']:.0f} | {m['test_psnr']} | {m['test_ssim']} | "
                  f"{m['train_psnr']} | {m['fast_vs_reference_psnr']} |")
    if "memory" in results:
        mem = results["memory"]
        print(f"\nPeak memory, {mem['gaussians']} Gaussians (SH degree 3) at {mem['size']}^2, "
              f"two training steps with the cpu backend: {mem['peak_mib']} MiB resident "
              f"({mem['step_mib']} MiB above the process before it built the Gaussians)")


if __name__ == "__main__":
    main()
