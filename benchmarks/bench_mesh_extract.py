"""Surface extraction and preprocessing: dense versus sparse hierarchical marching cubes.

Two SDFs: the analytic torus (queries are nearly free, so time is the extraction's own
overhead) and a small MLP (Fourier features, 3 x 128 SiLU) fitted for a few seconds to the
union-of-boxes SDF, so each query costs what a small decoder costs. For each: decoder queries,
wall time and peak memory of dense and hierarchical extraction at 256^3 and 512^3, and the
Chamfer-L1 between the two meshes (all vertices, normalised units). Every
configuration runs in a fresh subprocess with one thread; peak memory is the growth of the
process's max RSS over its RSS after imports and SDF set-up. Dense MLP extraction at 512^3
(135M decoder queries) is estimated from its query count and the measured per-query cost of
dense 256^3, and marked "est.". Preprocessing throughput: the SDF cache of ``--n-meshes`` CAPOD
meshes with one worker. Ceiling: the cache's target solid extracted at 256^3 scored against
the original meshes (the best a model trained on the cache can do).

``python -m benchmarks.bench_mesh_extract [--quick]`` prints a markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".." / "shared" / "data" / "meshes"


class MLPSdf(nn.Module):
    """s(x) = MLP([x, sin(2^k pi x), cos(2^k pi x)]_{k<4}), 3 hidden layers of 128."""

    def __init__(self, width: int = 128, freqs: int = 4):
        super().__init__()
        self.register_buffer("freq", (2.0 ** torch.arange(freqs)) * torch.pi)
        dim = 3 + 6 * freqs
        self.net = nn.Sequential(
            nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = (x[..., None] * self.freq).flatten(-2)  # [N, 3 * freqs]
        return self.net(torch.cat([x, xf.sin(), xf.cos()], dim=-1)).squeeze(-1)


def fitted_mlp(steps: int = 600, seed: int = 0) -> MLPSdf:
    """Fit the MLP to the union-of-boxes SDF (near-surface and uniform samples, L1 loss)."""
    from flow3d.mesh.sdf import union_of_boxes_sdf

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLPSdf()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        x = torch.rand(4096, 3, generator=g) * 2 - 1
        x = torch.cat([x[:2048], x[2048:] * 0.6])
        loss = (model(x) - union_of_boxes_sdf(x)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(sdf: str, method: str, resolution: int, out: str) -> None:
    """Child process: one extraction; writes a JSON record and the vertices (npy)."""
    from flow3d.mesh.extract import extract_dense, extract_hierarchical
    from flow3d.mesh.sdf import torus_sdf

    torch.set_num_threads(1)
    fn = torus_sdf if sdf == "torus" else fitted_mlp()
    base = _rss_mib()
    t0 = time.perf_counter()
    if method == "dense":
        res = extract_dense(fn, resolution)  # default ExtractBudget: chunks of 262,144
    else:
        res = extract_hierarchical(fn, resolution, coarse=32, band=1)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    np.save(out + ".npy", res.vertices)
    record = dict(queries=res.n_queries, seconds=seconds, peak_mib=peak,
                  faces=len(res.faces), levels=res.queries_per_level)
    Path(out + ".json").write_text(json.dumps(record))


def _child(sdf: str, method: str, resolution: int, tmp: Path) -> dict:
    out = str(tmp / f"{sdf}_{method}_{resolution}")
    cmd = [sys.executable, "-m", "benchmarks.bench_mesh_extract", "--child", sdf, method,
           str(resolution), out]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rec = json.loads(Path(out + ".json").read_text())
    rec["vertices"] = out + ".npy"
    return rec


def _chamfer_l1(a_path: str, b_path: str) -> float:
    """Symmetric mean nearest-vertex distance over all vertices of both meshes."""
    from scipy.spatial import cKDTree

    a, b = np.load(a_path), np.load(b_path)
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def preprocessing(n_meshes: int) -> tuple[int, float]:
    from flow3d.mesh.data import build_mesh_cache, list_mesh_files

    files = list_mesh_files(DATA / "capod")[:: max(1, 165 // n_meshes)][:n_meshes]
    with tempfile.TemporaryDirectory() as d:
        report = build_mesh_cache(files, d, workers=1, root=DATA, progress=False)
    return len(report.kept), report.meshes_per_minute


CEILING_MESHES = ("capod/class4/m37.obj", "capod/class1/m1.obj", "capod/class3/m25.obj",
                  "capod/class5/m49.obj", "trimesh_models/objects/bunny.ply")


def ceiling(resolution: int, names=CEILING_MESHES) -> list[tuple[str, dict]]:
    """The target solid (winding number + eps shell) extracted at ``resolution`` against the
    original mesh: the best any SDF model trained on the cache can score."""
    from flow3d.mesh.data import load_mesh, make_watertight
    from flow3d.mesh.metrics import mesh_metrics

    rows = []
    for name in names:
        mesh = load_mesh(DATA / name)
        rows.append((name, mesh_metrics(make_watertight(mesh, resolution), mesh)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256^3 only, 4 meshes")
    parser.add_argument("--n-meshes", type=int, default=10)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sdf, method, res, out = args.child
        run_one(sdf, method, int(res), out)
        return
    resolutions = (256,) if args.quick else (256, 512)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for sdf in ("torus", "mlp"):
            recs = {}
            for r in resolutions:
                recs["hier", r] = _child(sdf, "hierarchical", r, tmp)
                if sdf == "mlp" and r == 512:  # 135M MLP queries: estimated, not run
                    d256 = recs["dense", 256]
                    per_query = d256["seconds"] / d256["queries"]
                    q = 513**3
                    recs["dense", r] = dict(queries=q, seconds=per_query * q, peak_mib=None,
                                            estimated=True)
                else:
                    recs["dense", r] = _child(sdf, "dense", r, tmp)
            for r in resolutions:
                dn, hi = recs["dense", r], recs["hier", r]
                cd = (_chamfer_l1(dn["vertices"], hi["vertices"])
                      if "vertices" in dn else float("nan"))
                rows.append((sdf, r, dn, hi, cd))
    n_pre, mpm = preprocessing(4 if args.quick else args.n_meshes)
    ceil_res = 128 if args.quick else 256
    ceil = ceiling(ceil_res, CEILING_MESHES[:2] if args.quick else CEILING_MESHES)

    print("## Mesh extraction (bench_mesh_extract)\n")
    print("Dense vs sparse hierarchical marching cubes (coarse 32^3, band 1, 1 thread, "
          "chunks of 262,144 queries). Chamfer-L1 between the two meshes in normalised "
          "units ([-1, 1] box), over all vertices; faces: triangles of the dense / hierarchical "
          "mesh.\n")
    print("| SDF | res | dense queries | hier. queries | hier./dense | dense s | hier. s "
          "| dense peak MiB | hier. peak MiB | faces dense / hier. | Chamfer-L1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sdf, r, dn, hi, cd in rows:
        est = " (est.)" if dn.get("estimated") else ""
        dpeak = "n/a" if dn["peak_mib"] is None else f"{dn['peak_mib']:.0f}"
        print(f"| {sdf} | {r}^3 | {dn['queries']:,} | {hi['queries']:,} | "
              f"{100 * hi['queries'] / dn['queries']:.2f}% | {dn['seconds']:.1f}{est} | "
              f"{hi['seconds']:.1f} | {dpeak} | {hi['peak_mib']:.0f} | "
              f"{dn.get('faces', 'n/a')} / {hi['faces']} | "
              f"{'n/a' if np.isnan(cd) else f'{cd:.2e}'} |")
    print(f"\nPreprocessing (load, normalise, 16,384 surface + 100,352 SDF samples, "
          f"safetensors): {mpm:.1f} meshes/minute on one worker ({n_pre} CAPOD meshes).")
    print(f"\nCeiling of the SDF target: the target solid (winding number + 1/128 shell) "
          f"extracted at {ceil_res}^3 against the original mesh (`mesh_metrics`, 10^5 points).\n")
    keys = list(ceil[0][1])
    print("| mesh | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, m in ceil:
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
