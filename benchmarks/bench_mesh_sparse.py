"""The two-stage sparse-voxel generator's speed, peak memory and local editing (issue 15).

    python -m benchmarks.bench_mesh_sparse --part speed   # image to mesh at 256^3 / 512^3
    python -m benchmarks.bench_mesh_sparse --part edit    # what an edit keeps outside its box
    python -m benchmarks.bench_mesh_sparse --part latents # the latent stage on true voxels
    python -m benchmarks.bench_mesh_sparse --part class   # class-conditional structures

``speed``: each case runs in a fresh process (peak resident memory is that process's
``ru_maxrss``): reconstruct (encode + decode + extract) and image-to-mesh (structure flow,
latent flow, decode + extract) of a held-out CAPOD mesh / its render, at 256^3 and 512^3,
with the stages timed apart; torch's default thread count (2 on this machine) and one thread.

``edit``: held-out CAPOD meshes, the box ``x >= 0`` of the normalised frame regenerated with
the mesh's own class (``structure_class``). Reported: Chamfer-L1 between the vertices of the
edited and the unedited reconstruction (the same voxels and latents, decoded the same way)
outside the box, and outside the box grown by the decoder's reach
(:func:`~flow3d.mesh.sparse_generate.edit_margin`, where the bar applies); watertight and
one-piece rates of the edited meshes; seconds per edit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.bench_mesh import CKPT, capod_files, class_of


def _case(kind: str, res: int, threads: int) -> dict:
    """One timed case in this process (run through a subprocess by :func:`speed`)."""
    torch.set_num_threads(threads)
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.head import CONDITION_AZIMUTHS, CONDITION_ELEVATIONS, condition_images
    from flow3d.mesh.sparse_generate import (
        SampleOptions,
        decode_shape,
        load_two_stage,
    )
    from flow3d.mesh.sparse_vae import encode_mesh

    _, held = capod_files()
    gt = load_mesh(held[0])
    normed, _ = normalize_mesh(gt)
    out: dict = {"kind": kind, "resolution": res, "threads": threads}
    t0 = time.perf_counter()
    if kind == "reconstruct":
        vae = load_model(CKPT / "svae_cpu").model.eval()
        t1 = time.perf_counter()
        coords, z = encode_mesh(vae, normed)
        t2 = time.perf_counter()
        mesh = decode_shape(vae, coords, z, res, keep=None)
        t3 = time.perf_counter()
        out |= {"load": t1 - t0, "encode": t2 - t1, "decode+extract": t3 - t2}
    else:
        two = load_two_stage(CKPT / "structure_image", CKPT / "slat")
        img = condition_images(normed, 64, CONDITION_AZIMUTHS[:1], CONDITION_ELEVATIONS[:1])
        t1 = time.perf_counter()
        st, la = two.structure, two.latents
        with torch.no_grad():
            ctx = st.model.context(images=img)
        opts = SampleOptions(steps=50, latent_steps=25, cfg=3.0)
        coords = st.head.sample_structure(st.model, ctx, 1, steps=opts.steps, cfg=opts.cfg)[0]
        t2 = time.perf_counter()
        z = la.head.sample_latents_on(la.model, coords, None, steps=opts.latent_steps, cfg=0.0)
        t3 = time.perf_counter()
        mesh = decode_shape(two.vae, coords, z, res, faces=50_000)
        t4 = time.perf_counter()
        out |= {"load": t1 - t0, "structure": t2 - t1, "latents": t3 - t2,
                "decode+extract": t4 - t3, "voxels": len(coords)}
    out["total (no load)"] = time.perf_counter() - t0 - out["load"]
    out["faces"] = len(mesh.faces)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def speed() -> list[str]:
    rows = []
    for kind in ("reconstruct", "generate"):
        for res in (256, 512):
            for threads in (torch.get_num_threads(), 1):
                cmd = [sys.executable, "-m", "benchmarks.bench_mesh_sparse", "--case",
                       f"{kind}:{res}:{threads}"]
                r = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    lines = ["| task | grid | threads | stages (s) | total (s, models loaded) | peak memory "
             "(MiB) | faces |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = ", ".join(f"{k} {r[k]:.2f}" for k in ("encode", "structure", "latents",
                                                        "decode+extract") if k in r)
        lines.append(f"| {r['kind']} | {r['resolution']}^3 | {r['threads']} | {stages} | "
                     f"{r['total (no load)']:.2f} | {r['peak_mib']:.0f} | {r['faces']} |")
    return lines


def edit_quality(n: int, steps: int) -> list[str]:
    from scipy.spatial import cKDTree

    from flow3d.mesh.data import CAPOD_CLASSES, load_mesh, normalize_mesh
    from flow3d.mesh.pipeline import EditSettings, edit, load_generator
    from flow3d.mesh.sparse_generate import edit_margin

    _, held = capod_files()
    held = held[:: max(1, len(held) // n)][:n]
    box = (0.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    models = None
    rows = []
    for f in held:
        s = EditSettings(mesh=str(f), box=box, label=CAPOD_CLASSES[class_of(f)], steps=steps)
        models = models or load_generator(s.generate)
        t0 = time.perf_counter()
        r = edit(s, models=models, reference=True)
        sec = time.perf_counter() - t0
        _, norm = normalize_mesh(load_mesh(f))
        # vertices, not surface samples: two independent samplings of one surface are ~0.005
        # apart on average at 50k points, which would hide whether the surface moved at all
        a = np.asarray(r["mesh"].vertices)
        b = np.asarray(r["unedited"].vertices)
        row = {"seconds": sec, "watertight": float(r["mesh"].is_watertight),
               "one_piece": float(len(r["mesh"].split(only_watertight=False)) == 1),
               "one_piece_unedited": float(len(r["unedited"].split(only_watertight=False))
                                           == 1)}
        for name, margin in (("outside box", 0.0), ("outside box + reach",
                                                    edit_margin(models.vae))):
            # both surfaces restricted to the region, distances in the normalised frame
            ka = norm.apply(a)[:, 0] < box[0] - margin
            kb = norm.apply(b)[:, 0] < box[0] - margin
            pa, pb = norm.apply(a)[ka], norm.apply(b)[kb]
            if len(pa) == 0 or len(pb) == 0:
                row[name] = float("nan")
                continue
            d_ab, _ = cKDTree(pb).query(pa)
            d_ba, _ = cKDTree(pa).query(pb)
            row[name] = 0.5 * (d_ab.mean() + d_ba.mean())
        rows.append(row)
        print(f"  {f.parent.name}/{f.name}: {row}", flush=True)
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    worst = {k: float(np.nanmax([r[k] for r in rows])) for k in ("outside box",
                                                                  "outside box + reach")}
    return [f"Edit of {len(rows)} held-out CAPOD meshes, box x >= 0 regenerated with the mesh's "
            f"class ({steps} structure steps, extraction 256^3):", "",
            "| Chamfer-L1 outside box (mean / worst) | outside box + decoder reach (mean / "
            "worst) | watertight | one piece (unedited) | s per edit |", "|---|---|---|---|---|",
            f"| {mean['outside box']:.5f} / {worst['outside box']:.5f} | "
            f"{mean['outside box + reach']:.6f} / {worst['outside box + reach']:.6f} | "
            f"{mean['watertight']:.2f} | {mean['one_piece']:.2f} "
            f"({mean['one_piece_unedited']:.2f}) | {mean['seconds']:.1f} |"]


def latent_quality(n: int, steps: int) -> list[str]:
    """Stage 2 alone: on the true voxels of held-out meshes, the latents encoded by the VAE,
    generated by the latent flow, or all at the VAE's mean (what the structure alone gives)."""
    from benchmarks.bench_mesh import _mean, _or_none, _score
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.sparse_generate import decode_shape
    from flow3d.mesh.sparse_vae import encode_mesh

    la = load_model(CKPT / "slat", head_name="mesh_slat")
    vae = la.head.vae
    _, held = capod_files()
    held = held[:: max(1, len(held) // n)][:n]
    rows: dict[str, list] = {}
    for f in held:
        gt = load_mesh(f)
        normed, norm = normalize_mesh(gt)
        coords, z = encode_mesh(vae, normed)
        gen = la.head.sample_latents_on(la.model, coords, None, steps=steps)
        for name, lat in (("encoded (VAE reconstruction)", z),
                          (f"generated by the latent flow ({steps} steps)", gen),
                          ("mean latent (structure alone)",
                           vae.latent_mean.expand_as(z).clone())):
            mesh = _or_none(decode_shape, vae, coords, lat, 256, keep=None)  # None: empty
            rows.setdefault(name, []).append(_score(mesh, gt, norm))
        print(f"  {f.parent.name}/{f.name}", flush=True)
    lines = [f"Latent stage alone, on the true voxels of {len(held)} held-out CAPOD meshes "
             "(256^3):", "", "| latents | F@0.02 | F@0.05 | normal consistency | Chamfer-L1 |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {_mean(r, 'fscore@0.02'):.3f} | {_mean(r, 'fscore@0.05'):.3f} "
                     f"| {_mean(r, 'normal_consistency'):.3f} | {_mean(r, 'chamfer_l1'):.4f} |")
    return lines


def class_structures(seeds: int, steps: int, cfg: float) -> list[str]:
    """Class-conditional structures (no per-object target): per class and seed, the voxel
    count against the class's training shapes, the number of 26-connected pieces, and the IoU
    with the nearest training structure of the class (1 would be a copy)."""
    from scipy.ndimage import label

    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import CAPOD_CLASSES
    from flow3d.mesh.sparse_flow import coords_to_grid

    st = load_model(CKPT / "structure_class", head_name="mesh_structure")
    slat = st.head.latents()
    R = st.head.vae.resolution
    rows = []
    for c in range(st.model.num_classes):
        train = [coords_to_grid(slat.shape(r)[0], R) for r in slat.subset("train")
                 if int(slat.labels[r]) == c]
        for seed in range(seeds):
            ctx = st.model.context(labels=torch.tensor([c]))
            coords = st.head.sample_structure(st.model, ctx, 1, seed=seed, steps=steps,
                                              cfg=cfg)[0]
            g = coords_to_grid(coords, R)
            iou = max(float((g & t).sum() / (g | t).sum().clamp_min(1)) for t in train)
            pieces = label(g.numpy(), structure=np.ones((3, 3, 3), bool))[1]
            rows.append((CAPOD_CLASSES[c], len(coords), float(np.mean([int(t.sum())
                                                                          for t in train])),
                         pieces, iou))
    lines = [f"Class-conditional structures ({seeds} seeds per class, {steps} steps, cfg "
             f"{cfg:g}; checkpoints/mesh/structure_class):", "",
             "| class | voxels (sample / training mean) | pieces | IoU with the nearest training "
             "structure of the class |", "|---|---|---|---|"]
    for name in dict.fromkeys(r[0] for r in rows):
        sub = [r for r in rows if r[0] == name]
        lines.append(f"| {name} | {np.mean([r[1] for r in sub]):.0f} / {sub[0][2]:.0f} | "
                     f"{np.mean([r[3] for r in sub]):.1f} | {np.mean([r[4] for r in sub]):.2f} |")
    lines.append(f"| all | | {np.mean([r[3] for r in rows]):.1f} | "
                 f"{np.mean([r[4] for r in rows]):.2f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=("speed", "edit", "latents", "class"), default="speed")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=15, help="held-out meshes for --part edit")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    if args.case:
        kind, res, threads = args.case.split(":")
        print(json.dumps(_case(kind, int(res), int(threads))))
        return
    if args.part == "speed":
        print("\n".join(speed()))
    elif args.part == "edit":
        torch.set_num_threads(1)
        print("\n".join(edit_quality(args.n, args.steps)))
    elif args.part == "class":
        torch.set_num_threads(1)
        print("\n".join(class_structures(2, args.steps, 3.0)))
    else:
        torch.set_num_threads(1)
        print("\n".join(latent_quality(args.n, 25)))


if __name__ == "__main__":
    main()
