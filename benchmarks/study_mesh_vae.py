"""SDF-VAE design study: how well does one configuration fit a few training meshes in a fixed
number of CPU steps? A quick way to compare losses and sizes before a long run.

    python -m benchmarks.study_mesh_vae                      # vae_gpu's loss (sign 0.1)
    python -m benchmarks.study_mesh_vae --sign 0             # without the sign term
    python -m benchmarks.study_mesh_vae --width 128 --heads 8 --latent-dim 16

Trains on ``--shapes`` CAPOD training meshes of the mesh cache (built by
``flow3d train recipes/mesh/vae_cpu.yaml`` or any mesh recipe; ``--cache``), one thread, batch 4,
AdamW with warm-up and a cosine decay, then reconstructs the first eight of them (FPS
encoding, 128^3 extraction) and prints their mean F-score, normal consistency and Chamfer-L1
against the original meshes (20,000 points) as one JSON line. About 10 minutes at the default
7,500 steps on this CPU. The results recorded in docs/benchmarks.md (quality_mesh) came from it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> dict:
    from flow3d.mesh.data import MeshDataset, load_mesh
    from flow3d.mesh.metrics import mesh_metrics
    from flow3d.mesh.pipeline import ReconstructSettings, reconstruct
    from flow3d.mesh.vae import SDFVAE, VAELossWeights, vae_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "runs" / "mesh_cache"))
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--latents", type=int, default=64, help="latent tokens M")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--sign", type=float, default=0.1, help="weight of the sign term")
    ap.add_argument("--steps", type=int, default=7500)
    ap.add_argument("--shapes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    ds = MeshDataset(args.cache, n_surface=768, n_query=1024, split="train", holdout_per_class=2)
    rng = np.random.default_rng(args.seed)
    picks = sorted(int(i) for i in rng.choice(len(ds), args.shapes, replace=False))
    model = SDFVAE(args.width, args.heads, args.latent_dim, 1, 2, 6, args.latents, 0.1, "fps")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    weights = VAELossWeights(l1=1.0, l2=1.0, normal=0.1, eikonal=0.01, kl=1e-6, sign=args.sign)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(args.steps):
        ds.set_epoch(step)
        items = [ds[int(i)] for i in rng.choice(picks, 4)]
        batch = {k: torch.stack([it[k] for it in items]) for k in
                 ("surface_points", "surface_normals", "query_points", "query_sdf")}
        warm = min(1.0, (step + 1) / 200)
        cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * cos
        terms = vae_loss(model, batch["surface_points"], batch["surface_normals"],
                         batch["query_points"], batch["query_sdf"], generator=g,
                         weights=weights, num_latents=args.latents, num_grad=128)
        opt.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    rows = []
    for i in picks[:8]:
        gt = load_mesh(ROOT / ds.source_path(i))
        with torch.no_grad():
            pred = reconstruct(ReconstructSettings(latents=args.latents), mesh=gt, vae=model)
        rows.append(mesh_metrics(pred, gt, n_points=20_000, n_volume=0))
    keys = ("fscore@0.02", "fscore@0.05", "normal_consistency", "chamfer_l1")
    out = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}
    out |= {"config": {k: v for k, v in vars(args).items() if k != "cache"},
            "train_seconds": round(train_s)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
