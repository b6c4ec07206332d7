"""Mesh model benchmark: training throughput, image-to-mesh wall time, and (``--quality``) the
bars of the bundled checkpoints: VAE reconstruction on training and held-out CAPOD meshes, and
image-to-mesh on renders of held-out meshes against two baselines measured the same way.

    python -m benchmarks.bench_mesh              # throughput + wall time (minutes)
    python -m benchmarks.bench_mesh --quality    # + the quality tables (tens of minutes on CPU)

Held-out set of the bundled checkpoints: CAPOD meshes ``mK`` with ``K % 11 in (0, 10)``, two per
class, 30 in all (the bundled models were trained without them). Baselines, given the same
input render: *retrieval* returns the training mesh whose render has the nearest pooled
image-encoder feature (the flow's own encoder, cosine distance, over six views of every
training mesh); *class mean* is the zero level set of the mean SDF (32^3 grid, cubic upsampling
to 64^3) of the training meshes of the true class (an oracle label). All predictions are mapped
into the ground truth's frame and scored with :func:`flow3d.mesh.metrics.mesh_metrics`.
Prints markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "meshes"
CKPT = ROOT / "checkpoints" / "mesh"


def capod_files() -> tuple[list[Path], list[Path]]:
    """The split the bundled models were trained with (recipes: holdout_per_class 2)."""
    from flow3d.mesh.data import capod_split

    return capod_split(DATA / "capod", holdout_per_class=2)


def class_of(path: Path) -> int:
    return int(path.parent.name[5:]) - 1


# ---- throughput -------------------------------------------------------------------------
def throughput(steps: int = 5) -> list[str]:
    from flow3d.engine.config import load_recipe
    from flow3d.mesh.head import MeshVAEHead
    from flow3d.mesh.vae import vae_loss

    rows = []
    r = load_recipe(ROOT / "recipes/mesh/vae_cpu.yaml")
    vae = MeshVAEHead(r).build_model()
    opt = torch.optim.AdamW(vae.parameters(), 1e-4)
    b, d = r.trainer.batch_size, r.data
    g = torch.Generator().manual_seed(0)
    surf = torch.nn.functional.normalize(torch.randn(b, d.n_surface, 3, generator=g), dim=-1)
    q = torch.rand(b, d.n_query, 3, generator=g) * 2 - 1
    sdf = q.norm(dim=-1) - 1.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = vae_loss(vae, surf, surf, q, sdf, generator=g, num_latents=r.model.num_latents,
                        num_grad=r.model.num_grad, weights=r.model.loss)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    rows.append(f"| SDF-VAE train step (vae_cpu, batch {b}, M={r.model.num_latents}) | "
                f"{dt:.3f} s | {b / dt:.1f} shapes/s |")

    from flow3d.mesh.flow import LatentFlow

    r = load_recipe(ROOT / "recipes/mesh/flow_image.yaml")
    m = r.model
    flow = LatentFlow(8, m.width, m.heads, m.depth, m.cond, m.num_classes, m.image_resolution,
                      m.image_channels)
    opt = torch.optim.AdamW(flow.parameters(), 1e-4)
    b = r.trainer.batch_size
    x = torch.randn(b, r.data.num_latents, 8)
    img = torch.rand(b, 1, m.image_resolution, m.image_resolution)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        t = torch.rand(b)
        loss = (flow(x * t[:, None, None], t, flow.context(images=img)) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    rows.append(f"| latent flow train step (flow_image, batch {b}, with image encoder) | "
                f"{dt:.3f} s | {b / dt:.1f} shapes/s |")
    return rows


def wall_time(resolutions=(128, 256), steps: int = 50) -> list[str]:
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.image_encoder import load_image
    from flow3d.mesh.pipeline import DEMO_IMAGE
    from flow3d.mesh.postprocess import sdf_to_mesh

    pipe = load_model(CKPT / "flow_image", head_name="mesh_flow")
    model = pipe.model
    rows = []
    for res in resolutions:
        t0 = time.perf_counter()
        img = load_image(DEMO_IMAGE, model.image_encoder.resolution)
        ctx = model.context(images=img[None])
        z = pipe.head.sample_latents(model, ctx, 1, steps=steps, cfg=5.0)
        t1 = time.perf_counter()
        mesh = sdf_to_mesh(pipe.head.vae.sdf_fn(z), res, faces=50000)
        t2 = time.perf_counter()
        rows.append(f"| image -> mesh, {steps} Euler steps + CFG, extraction {res}^3 | "
                    f"{t2 - t0:.1f} s (flow {t1 - t0:.1f} s, decode+extract+post {t2 - t1:.1f} s)"
                    f" | {len(mesh.faces)} faces, watertight={mesh.is_watertight} |")
    return rows


# ---- quality ----------------------------------------------------------------------------
def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


# an empty prediction (no zero level set) scores as a complete miss
FAILED = {"chamfer_l1": 1.0, "chamfer_l2": 1.0, "fscore@0.01": 0.0, "fscore@0.02": 0.0,
          "fscore@0.05": 0.0, "normal_consistency": 0.0, "watertight": 0.0, "one_piece": 0.0}


def _score(pred, gt, norm=None) -> dict:
    from flow3d.mesh.metrics import mesh_metrics

    if pred is None:
        return dict(FAILED)
    m = mesh_metrics(pred if norm is None else norm.invert(pred), gt, n_points=100_000,
                     n_volume=0)
    m["watertight"] = float(pred.is_watertight)
    m["one_piece"] = float(len(pred.split(only_watertight=False)) == 1)
    return m


def _or_none(fn, *args, **kwargs):
    from flow3d.errors import DataError

    try:
        return fn(*args, **kwargs)
    except DataError:
        return None


def vae_quality(train: list[Path], held: list[Path], n_train: int, res: int,
                vae_name: str = "vae_cpu") -> dict:
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import load_mesh
    from flow3d.mesh.pipeline import ReconstructSettings, reconstruct

    vae = load_model(CKPT / vae_name, head_name="mesh_vae").model
    settings = ReconstructSettings(resolution=res)
    rng = np.random.default_rng(0)
    picks = {"train": [train[i] for i in sorted(rng.choice(len(train), n_train, replace=False))],
             "heldout": held}
    out = {}
    for split, files in picks.items():
        rows = []
        for f in files:
            gt = load_mesh(f)
            rows.append(_score(_or_none(reconstruct, settings, mesh=gt, vae=vae), gt))
        out[split] = {k: _mean(rows, k) for k in rows[0]} | {"n": len(rows)}
    return out


def class_mean_meshes(train: list[Path], grid: int = 32) -> dict[int, object]:
    import trimesh
    from scipy.ndimage import zoom
    from skimage.measure import marching_cubes

    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.postprocess import remove_floaters
    from flow3d.mesh.sdf import mesh_sdf

    b = 1.05
    axis = np.linspace(-b, b, grid)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for f in train:
        mesh, _ = normalize_mesh(load_mesh(f))
        c = class_of(f)
        s = mesh_sdf(mesh, pts.astype(np.float32)).reshape(grid, grid, grid)
        sums[c] = sums.get(c, 0) + s
        counts[c] = counts.get(c, 0) + 1
    out = {}
    for c, s in sums.items():
        vol = zoom(s / counts[c], 2, order=3)  # [2g, 2g, 2g]
        n = vol.shape[0]
        v, fa, _, _ = marching_cubes(vol, 0.0, spacing=(2 * b / (n - 1),) * 3)
        mesh = trimesh.Trimesh(v - b, fa[:, ::-1], process=True)
        out[c] = remove_floaters(mesh, "largest")
    return out


def image_quality(train: list[Path], held: list[Path], cfgs, steps: int, res: int) -> dict:
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.head import CONDITION_AZIMUTHS, CONDITION_ELEVATIONS, condition_images
    from flow3d.mesh.pipeline import GenerateSettings, generate

    pipe = load_model(CKPT / "flow_image", head_name="mesh_flow")
    enc = pipe.model.image_encoder
    r = enc.resolution
    # retrieval database: six views of every training mesh
    feats, owners = [], []
    with torch.no_grad():
        for i, f in enumerate(train):
            mesh, _ = normalize_mesh(load_mesh(f))
            f_i = enc.pooled(condition_images(mesh, r))  # [6, W]
            feats.append(torch.nn.functional.normalize(f_i, dim=-1))
            owners += [i] * len(CONDITION_AZIMUTHS)
    feats = torch.cat(feats)
    owners = np.array(owners)
    means = class_mean_meshes(train)
    rows: dict[str, list[dict]] = {"class mean": [], "retrieval": []}
    rows |= {f"ours (cfg {w:g})": [] for w in cfgs}
    for f in held:
        gt = load_mesh(f)
        gt_n, norm = normalize_mesh(gt)
        # the input: a render of the held-out mesh from a view the training set also used
        img = condition_images(gt_n, r, CONDITION_AZIMUTHS[:1], CONDITION_ELEVATIONS[:1])[0]
        preds = {"class mean": means[class_of(f)]}
        with torch.no_grad():
            q = torch.nn.functional.normalize(enc.pooled(img[None]), dim=-1)
        best = train[int(owners[int((feats @ q[0]).argmax())])]
        preds["retrieval"], _ = normalize_mesh(load_mesh(best))
        for w in cfgs:
            settings = GenerateSettings(steps=steps, cfg=w, resolution=res, faces=50000)
            preds[f"ours (cfg {w:g})"] = _or_none(generate, settings, image=img, models=pipe)
        for name, p in preds.items():
            rows[name].append(_score(p, gt, norm))
    return {k: {kk: _mean(v, kk) for kk in v[0]} | {"n": len(v)} for k, v in rows.items()}


def quality_tables(args) -> list[str]:
    train, held = capod_files()
    lines, vq, iq = [], {}, {}
    if args.part in ("all", "vae"):
        table, vq = _vae_table(args, train, held)
        lines += table
    if args.part in ("all", "image"):
        table, iq = _image_table(args, train, held)
        lines += table
    if args.json:
        Path(args.json).write_text(json.dumps({"vae": vq, "image": iq}, indent=1))
    return lines


def _vae_table(args, train, held) -> tuple[list[str], dict]:
    t0 = time.perf_counter()
    vq = vae_quality(train, held, args.n_train, args.resolution, args.vae)
    lines = ["", f"SDF-VAE reconstruction (checkpoints/mesh/{args.vae}, M=64, extraction "
              f"{args.resolution}^3, 100k points; {time.perf_counter() - t0:.0f} s):", "",
              "| meshes | n | F@0.01 | F@0.02 | F@0.05 | normal consistency | Chamfer-L1 | "
              "watertight |", "|---|---|---|---|---|---|---|---|"]
    for split, m in vq.items():
        lines.append(f"| {split} | {m['n']} | {m['fscore@0.01']:.3f} | {m['fscore@0.02']:.3f} | "
                     f"{m['fscore@0.05']:.3f} | {m['normal_consistency']:.3f} | "
                     f"{m['chamfer_l1']:.4f} | {m['watertight']:.2f} |")
    return lines, vq


def _image_table(args, train, held) -> tuple[list[str], dict]:
    t0 = time.perf_counter()
    held = held[:: max(1, len(held) // args.max_heldout)][: args.max_heldout]
    iq = image_quality(train, held, args.cfg, args.steps, args.resolution)
    lines = ["", f"Image-to-mesh on renders of the {len(held)} held-out CAPOD meshes "
              f"({args.steps} Euler steps, extraction {args.resolution}^3; "
              f"{time.perf_counter() - t0:.0f} s):", "",
              "| method | F@0.05 | F@0.02 | normal consistency | Chamfer-L1 | watertight | "
              "one piece |", "|---|---|---|---|---|---|---|"]
    for name, m in iq.items():
        lines.append(f"| {name} | {m['fscore@0.05']:.3f} | {m['fscore@0.02']:.3f} | "
                     f"{m['normal_consistency']:.3f} | {m['chamfer_l1']:.4f} | "
                     f"{m['watertight']:.2f} | {m['one_piece']:.2f} |")
    return lines, iq


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quality", action="store_true")
    p.add_argument("--n-train", type=int, default=30, help="training meshes for the VAE table")
    p.add_argument("--vae", default="vae_cpu", help="bundled VAE of the VAE table")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, nargs="+", default=[5.0])
    p.add_argument("--json", help="also write the quality numbers here")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--max-heldout", type=int, default=30, help="held-out meshes (image table)")
    p.add_argument("--part", choices=("all", "vae", "image"), default="all",
                   help="which quality table (run two processes in parallel)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("## Mesh models (SDF-VAE + latent flow)\n")
    if not args.no_timing:
        print("| what | time | rate |\n|---|---|---|")
        for row in throughput():
            print(row, flush=True)
        if (CKPT / "flow_image").exists():
            for row in wall_time():
                print(row, flush=True)
    if args.quality:
        if not DATA.exists():
            print(f"\n(quality skipped: {DATA} not found)")
        else:
            print("\n".join(quality_tables(args)), flush=True)


if __name__ == "__main__":
    main()
