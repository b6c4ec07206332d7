"""Quality and speed of the sparse-voxel SDF-VAE (``mesh_svae``, issue 15 stage 1).

Reconstructs held-out CAPOD meshes (never trained on: ``capod_split`` with the checkpoint's
``holdout_per_class``; the last mesh of every class first, so ``--max-heldout 15`` is the
issue's 15-mesh protocol) and the trimesh objects bunny, fandisk and teapot (unlike CAPOD) with
:func:`flow3d.mesh.sparse_vae.reconstruct_sparse` at each ``--resolutions``, and scores them
with :func:`flow3d.mesh.metrics.mesh_metrics` (10^5 points, in the ground truth's normalised
frame): F@0.02, F@0.05, normal consistency, Chamfer-L1, watertight. Speed: decoder queries per
second (one thread, chunks of 65,536) and the extraction's queries and seconds, to set beside
``bench_mesh_extract``'s dense and hierarchical rows; ``--mixing`` times one 3x3x3 sparse
convolution against windowed attention over key-serialised voxels (forward + backward).

``python -m benchmarks.quality_mesh_svae [--ckpt checkpoints/mesh/svae_cpu]
[--resolutions 256 128] [--max-heldout 30] [--mixing]`` prints markdown tables.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".." / "shared" / "data" / "meshes"
OBJECTS = ("bunny.ply", "fandisk.obj", "teapot.stl")
KEYS = ("fscore@0.02", "fscore@0.05", "normal_consistency", "chamfer_l1")


def heldout_files(holdout_per_class: int) -> list[Path]:
    from flow3d.mesh.data import capod_split

    _, held = capod_split(DATA / "capod", holdout_per_class)
    _, last = capod_split(DATA / "capod", 1)
    return last + [f for f in held if f not in last]


def reconstruct_and_score(model, path: Path, resolution: int) -> dict:
    from flow3d.mesh.data import load_mesh
    from flow3d.mesh.metrics import mesh_metrics
    from flow3d.mesh.sparse_vae import reconstruct_sparse

    gt = load_mesh(path)
    t = time.perf_counter()
    pred = reconstruct_sparse(model, gt, resolution)
    seconds = time.perf_counter() - t
    m = mesh_metrics(pred, gt, n_volume=0)
    m.update(watertight=float(pred.is_watertight), seconds=seconds, faces=len(pred.faces))
    return m


def ceiling_and_score(path: Path, resolution: int) -> dict:
    """The target SDF itself (winding number + shell), extracted from its own active voxels
    with the same masked extraction: what a perfect decoder would score."""
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.extract import extract_hierarchical
    from flow3d.mesh.metrics import mesh_metrics
    from flow3d.mesh.sdf import mesh_sdf_fn
    from flow3d.mesh.sparse_vae import masked_sdf_fn
    from flow3d.mesh.voxels import DEFAULT_BOUNDS, shape_active_voxels

    gt = load_mesh(path)
    normed, norm = normalize_mesh(gt)
    t = time.perf_counter()
    c = shape_active_voxels(normed)
    fn = masked_sdf_fn(mesh_sdf_fn(normed), c, 32, DEFAULT_BOUNDS, 0.1)
    res = extract_hierarchical(fn, resolution, coarse=32, bounds=DEFAULT_BOUNDS, start_cells=c)
    pred = norm.invert(res.mesh)
    m = mesh_metrics(pred, gt, n_volume=0)
    m.update(watertight=float(pred.is_watertight), seconds=time.perf_counter() - t,
             faces=len(pred.faces))
    return m


def table(rows: dict[str, dict], title: str) -> str:
    head = "| mesh | F@0.02 | F@0.05 | NC | Chamfer-L1 | watertight | faces | s |"
    lines = [title, "", head, "|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['fscore@0.02']:.3f} | {m['fscore@0.05']:.3f} | "
                     f"{m['normal_consistency']:.3f} | {m['chamfer_l1']:.4f} | "
                     f"{int(m['watertight'])} | {m['faces']} | {m['seconds']:.1f} |")
    return "\n".join(lines)


def mean_row(rows: dict[str, dict]) -> dict:
    out = {k: float(np.mean([m[k] for m in rows.values()])) for k in (*KEYS, "seconds")}
    out["watertight"] = sum(m["watertight"] for m in rows.values())
    out["faces"] = int(np.mean([m["faces"] for m in rows.values()]))
    return out


def decoder_speed(model, path: Path, resolution: int) -> str:
    """Queries per second of the decoder, and the extraction's queries and seconds."""
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.sparse_vae import decode_sparse, encode_mesh
    from flow3d.mesh.voxels import SparseVoxels

    normed, _ = normalize_mesh(load_mesh(path))
    t = time.perf_counter()
    coords, mu = encode_mesh(model, normed)
    t_enc = time.perf_counter() - t
    v = SparseVoxels(coords, torch.zeros(len(coords), dtype=torch.long), model.resolution, 1)
    fn = model.sdf_fn(mu, v)
    u = (coords.float() + torch.rand(len(coords), 3)) * model.h - model.bounds
    pts = u.repeat(max(1, 262_144 // len(u)), 1)[:262_144]
    fn(pts[:1000])
    t = time.perf_counter()
    fn(pts)
    qps = len(pts) / (time.perf_counter() - t)
    res = decode_sparse(model, mu, coords, resolution)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return (f"| {path.parent.name}/{path.name} | {len(coords)} | {t_enc:.2f} | {qps:,.0f} | "
            f"{resolution}^3 | {res.n_queries:,} | {res.seconds:.1f} | {len(res.faces)} | "
            f"{peak:.0f} |")


def latent_report(model, path: Path) -> str:
    """Scale of the latent: per-channel std of the posterior means against the mean posterior
    sigma (a flow samples latents to within about sigma)."""
    from flow3d.mesh.data import load_mesh, normalize_mesh, sample_surface
    from flow3d.mesh.voxels import SparseVoxels, shape_active_voxels

    normed, _ = normalize_mesh(load_mesh(path))
    c = torch.from_numpy(shape_active_voxels(normed, model.resolution, model.bounds))
    v = SparseVoxels(c, torch.zeros(len(c), dtype=torch.long), model.resolution, 1)
    pts, nrm = sample_surface(normed, 8192, np.random.default_rng(0))
    with torch.no_grad():
        _, mu, logvar = model.encode(v, torch.from_numpy(pts), torch.from_numpy(nrm),
                                     torch.zeros(len(pts), dtype=torch.long), sample=False)
    sigma = (0.5 * logvar).exp().mean(0)
    return (f"latent of {path.parent.name}/{path.name}: mean |mu| per channel "
            f"{[round(float(x), 3) for x in mu.abs().mean(0)]}, std of mu "
            f"{[round(float(x), 3) for x in mu.std(0)]}, mean posterior sigma "
            f"{[round(float(x), 3) for x in sigma]}; running latent_std "
            f"{[round(float(s), 3) for s in model.latent_std]}")


def mixing_speed(model, path: Path, width: int = 32, batch: int = 4) -> str:
    """One 3x3x3 sparse convolution against windowed attention, forward + backward."""
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.sparse_vae import SparseConv3d
    from flow3d.mesh.voxels import SparseVoxels, shape_active_voxels

    normed, _ = normalize_mesh(load_mesh(path))
    c = torch.from_numpy(shape_active_voxels(normed, model.resolution, model.bounds))
    coords = c.repeat(batch, 1)
    b = torch.arange(batch).repeat_interleave(len(c))
    v = SparseVoxels(coords, b, model.resolution, batch)
    M = len(v)
    x = torch.randn(M, width, requires_grad=True)

    def timed(fn, n=5):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return 1e3 * (time.perf_counter() - t) / n

    t_nbr = timed(lambda: SparseVoxels(coords, b, model.resolution, batch).neighbors(), 3)
    conv, nbr = SparseConv3d(width, width), v.neighbors()
    t_conv = timed(lambda: conv(x, nbr).sum().backward())
    qkv, out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)

    def attention(win: int, heads: int = 4):
        xs = x[v.order]  # serialised by key
        xs = torch.cat([xs, xs.new_zeros((-M) % win, width)])
        q, k, val = qkv(xs).view(-1, win, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        w = (q @ k.transpose(-1, -2)) * (width // heads) ** -0.5
        h = (w.softmax(-1) @ val).transpose(1, 2).reshape(-1, width)[:M]
        y = torch.empty_like(h)
        y[v.order] = out(h)
        y.sum().backward()

    t_att64 = timed(lambda: attention(64))
    t_att27 = timed(lambda: attention(27))
    return (f"| {M} voxels ({batch} x {path.name}), width {width} | {t_nbr:.0f} | {t_conv:.0f} | "
            f"{t_att27:.0f} | {t_att64:.0f} |")


def main(argv=None) -> None:
    from flow3d.mesh.sparse_head import load_svae

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "mesh" / "svae_cpu"))
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 128])
    ap.add_argument("--max-heldout", type=int, default=30)
    ap.add_argument("--no-objects", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--mixing", action="store_true")
    ap.add_argument("--ceiling", action="store_true",
                    help="also score the target SDF itself, extracted the same way")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = load_svae(args.ckpt)
    from flow3d.engine.checkpoint import load_model

    recipe = load_model(args.ckpt).recipe
    files = heldout_files(recipe.data.holdout_per_class)[: args.max_heldout]
    print(f"checkpoint {args.ckpt} (step {load_model(args.ckpt).step})")
    print(latent_report(model, files[0]))
    for res in args.resolutions:
        rows = {f"{p.parent.name}/{p.name}": reconstruct_and_score(model, p, res) for p in files}
        print(table(rows, f"\nHeld-out CAPOD at {res}^3 ({len(rows)} meshes)"))
        m = mean_row(rows)
        print(f"| **mean ({len(rows)})** | **{m['fscore@0.02']:.3f}** | {m['fscore@0.05']:.3f} | "
              f"**{m['normal_consistency']:.3f}** | {m['chamfer_l1']:.4f} | "
              f"{int(m['watertight'])}/{len(rows)} | {m['faces']} | {m['seconds']:.1f} |")
        if args.ceiling:
            rows = {f"{p.parent.name}/{p.name}": ceiling_and_score(p, res) for p in files}
            print(table(rows, f"\nCeiling: the target SDF on its own active voxels at {res}^3"))
            m = mean_row(rows)
            print(f"| **mean ({len(rows)})** | **{m['fscore@0.02']:.3f}** | "
                  f"{m['fscore@0.05']:.3f} | **{m['normal_consistency']:.3f}** | "
                  f"{m['chamfer_l1']:.4f} | {int(m['watertight'])}/{len(rows)} | {m['faces']} | "
                  f"{m['seconds']:.1f} |")
        if not args.no_objects:
            rows = {name: reconstruct_and_score(model, DATA / "trimesh_models" / "objects" / name,
                                                res) for name in OBJECTS}
            print(table(rows, f"\ntrimesh objects at {res}^3"))
    if not args.no_speed:
        print("\n| mesh | active voxels | encode s | decoder queries/s | res | extraction "
              "queries | extraction s | faces | process peak RSS MiB |\n"
              "|---|---|---|---|---|---|---|---|---|")
        for res in (256, 512):
            print(decoder_speed(model, files[0], res))
    if args.mixing:
        print("\n| neighbour mixing (fwd + bwd, one thread) | neighbour table ms | 3x3x3 sparse "
              "conv ms | window-27 attention ms | window-64 attention ms |\n|---|---|---|---|---|")
        print(mixing_speed(model, files[0]))
    print(f"\n_quality_mesh_svae.py: {time.perf_counter() - t0:.0f} s wall._")


if __name__ == "__main__":
    main()
