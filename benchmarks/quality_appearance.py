"""Appearance transfer with known answers (issue 17), on held-out CAPOD meshes.

    python -m benchmarks.quality_appearance [--pairs 10] [--self-meshes 3] [--steps 50]

GPT ranking is not available here, so every case has a right answer:

* **Part transfer**: a held-out mesh is painted by the ``parts`` rule
  (:func:`flow3d.appearance.paint.geometric_parts`: side surfaces below / above 40% of the
  height, up-facing, down-facing; up = +y, CAPOD's canonical up) with a random 4-colour
  palette, and transferred onto a held-out mesh of another class. The right answer is the same
  rule and palette on the target. Reported over the target's surface samples: the per-part
  colour error (CIEDE2000 between the result and the part's palette colour, averaged within
  each part, then over parts), the sliced Wasserstein distance between the source's and the
  result's colour distributions (RGB), and seconds per transfer (models loaded once).
* **Self-transfer**: a held-out mesh painted by each rule (parts, stripes, checker, noise,
  gradient, texture) transferred onto itself; PSNR of 6 unlit renders (pyrender, 128^2) of the
  result against the same mesh with the painting's own vertex colours, over object pixels.
  The appearance VAE's own reconstruction (encode, decode, no flow) is the ceiling.
* **Image guidance** (``--images N``): a render of a parts-painted held-out mesh is the
  source, transferred onto a held-out mesh of another class with ``--guidance image`` and
  without guidance; the sliced Wasserstein distance between the result's surface colours and
  the painted source's.
* **Geometry**: the largest distance from an output vertex to the target surface (the output
  is the target subdivided in its own planes: 0 up to float precision).

Methods: ``ours`` (flow + part guidance, the command's default), ``flow only`` (the flow with
the palette, no guidance), ``nearest point`` (each target point takes the colour of the
nearest source point after both meshes' surface boxes are mapped to the unit cube: CAPOD
meshes are canonically posed, so this is the aligned copy), ``our correspondence, copied``
(each target point takes the colour of its part-matched source sample, the pairing the part
guidance pulls to, without the flow or the appearance VAE);
and, as the ceiling, ``answer through the VAE`` (the right answer painted on the target,
encoded and decoded by the appearance VAE).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_mesh import capod_files, class_of

UP = 1  # CAPOD's canonical up axis (+y: chair seats face +y)


def painted_source(path, painting, seed: int = 0, count: int = 16384):
    """A CAPOD mesh painted by a rule, as a :class:`Source` (normalised frame)."""
    from flow3d.appearance.paint import paint
    from flow3d.appearance.transfer import Source
    from flow3d.mesh.data import load_mesh, normalize_mesh, sample_surface
    from flow3d.mesh.sparse_vae import orient_normals

    normed, _ = normalize_mesh(load_mesh(path))
    pts, nrm = sample_surface(normed, count, np.random.default_rng(seed))
    nrm = orient_normals(normed, pts, nrm)
    return Source(colors=paint(pts, nrm, painting), points=pts.astype(np.float32),
                  normals=nrm.astype(np.float32), mesh=normed, path=str(path))


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.color import deltaE_ciede2000, rgb2lab

    return deltaE_ciede2000(rgb2lab(a[None].clip(0, 1))[0], rgb2lab(b[None].clip(0, 1))[0])


def part_error(rgb: np.ndarray, parts: np.ndarray, palette: np.ndarray) -> float:
    """Mean over the parts present of the mean CIEDE2000 to the part's colour."""
    err = delta_e(rgb, palette[parts])
    return float(np.mean([err[parts == k].mean() for k in np.unique(parts)]))


def swd(a: np.ndarray, b: np.ndarray) -> float:
    from flow3d.appearance.transfer import sliced_wasserstein

    return float(sliced_wasserstein(torch.from_numpy(a).float(), torch.from_numpy(b).float(),
                                    projections=128))


def nearest_point(source, pts: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    def unit(p):
        lo, hi = p.min(0), p.max(0)
        return (p - lo) / np.maximum(hi - lo, 1e-9)

    _, idx = cKDTree(unit(source.points)).query(unit(pts))
    return source.colors[idx]


def target_samples(target_path, seed: int = 1, count: int = 16384):
    from flow3d.mesh.data import load_mesh, normalize_mesh, sample_surface
    from flow3d.mesh.sparse_vae import orient_normals

    mesh = load_mesh(target_path)
    normed, _ = normalize_mesh(mesh)
    pts, nrm = sample_surface(normed, count, np.random.default_rng(seed))
    return mesh, pts.astype(np.float32), orient_normals(normed, pts, nrm).astype(np.float32)


def run_pair(models, source, target_path, steps: int, seed: int, painting=None) -> dict:
    from flow3d.appearance.paint import geometric_parts
    from flow3d.appearance.transfer import (
        TransferSettings,
        colors_at,
        part_correspondence,
        transfer,
    )

    mesh, pts, nrm = target_samples(target_path)
    parts = geometric_parts(pts, nrm, UP)
    out = {}
    for name, guidance in (("ours", "part"), ("flow only", "none")):
        s = TransferSettings(steps=steps, guidance=guidance, seed=seed)
        r = transfer(s, target_mesh=mesh, source=source, models=models)
        rgb = colors_at(models.appearance, r["shape"], r["latents"], pts, nrm)
        out[name] = {"rgb": rgb, "seconds": r["seconds"], "mesh": r["mesh"], "shape": r["shape"]}
    out["nearest point"] = {"rgb": nearest_point(source, pts)}
    # our correspondence, copied: each sample takes its part-matched source sample's colour
    from flow3d.appearance.transfer import point_features

    a = models.appearance
    tgt_shape = out["ours"]["shape"]
    sub = torch.randperm(len(source.points), generator=torch.Generator().manual_seed(seed))
    sub = sub[:8192]
    src_feats = point_features(torch.from_numpy(source.points), torch.from_numpy(source.normals))
    rows = part_correspondence(point_features(torch.from_numpy(pts), torch.from_numpy(nrm)),
                               src_feats[sub], TransferSettings().parts, seed)
    out["our correspondence, copied"] = {"rgb": source.colors[sub[rows].numpy()]}
    if painting is not None:  # the known answer through the appearance VAE: the ceiling
        from flow3d.appearance.paint import paint

        with torch.no_grad():
            _, mu_t, _ = a.encode(tgt_shape.voxels, tgt_shape.points,
                                  torch.from_numpy(paint(tgt_shape.points.numpy(),
                                                         tgt_shape.normals.numpy(), painting)),
                                  torch.zeros(len(tgt_shape.points), dtype=torch.long),
                                  tgt_shape.normals, sample=False)
        out["answer through the VAE"] = {"rgb": colors_at(a, tgt_shape, mu_t, pts, nrm)}
    out["_parts"], out["_mesh"] = parts, mesh
    return out


def geometry_error(result_mesh, target_mesh) -> float:
    from flow3d.mesh.sdf import mesh_sdf

    dist = np.abs(mesh_sdf(target_mesh, np.asarray(result_mesh.vertices), eps=0.0))
    return float(dist.max() / (target_mesh.bounds[1] - target_mesh.bounds[0]).max())


def part_transfer(models, held, n_pairs: int, steps: int) -> list[str]:
    from flow3d.appearance.paint import Painting, _palette

    methods = ("ours", "flow only", "nearest point", "our correspondence, copied",
               "answer through the VAE")
    rows = {m: {"err": [], "swd": []} for m in methods}
    secs, geo = [], []
    pairs = []
    for k in range(n_pairs):
        src = held[(2 * k) % len(held)]
        tgt = next(h for j, h in enumerate(held[(2 * k + 7) % len(held):] + held)
                   if class_of(h) != class_of(src))
        pairs.append((src, tgt))
    for k, (src, tgt) in enumerate(pairs):
        rng = np.random.default_rng(100 + k)
        pal = _palette(rng, 4)
        painting = Painting("parts", pal, axis=UP)
        source = painted_source(src, painting, seed=k)
        r = run_pair(models, source, tgt, steps, seed=k, painting=painting)
        for m in methods:
            rows[m]["err"].append(part_error(r[m]["rgb"], r["_parts"], pal))
            rows[m]["swd"].append(swd(source.colors, r[m]["rgb"]))
        secs.append(r["ours"]["seconds"])
        geo.append(geometry_error(r["ours"]["mesh"], r["_mesh"]))
        print(f"  pair {k}: {src.parent.name}/{src.stem} -> {tgt.parent.name}/{tgt.stem}: "
              + ", ".join(f"{m} {rows[m]['err'][-1]:.1f}" for m in methods), flush=True)
    lines = [f"Part transfer, {n_pairs} held-out pairs of different classes, {steps} steps "
             "(CIEDE2000 per part, lower is better; SWD: sliced Wasserstein of RGB to the "
             "source's colours):", "",
             "| method | per-part colour error (mean) | worst pair | colour SWD | wins vs ours |",
             "|---|---|---|---|---|"]
    ours = np.array(rows["ours"]["err"])
    for m in methods:
        e = np.array(rows[m]["err"])
        wins = "" if m in ("ours", "answer through the VAE") else \
            f"{int((ours < e).sum())}/{len(e)}"
        lines.append(f"| {m} | {e.mean():.1f} | {e.max():.1f} | "
                     f"{np.mean(rows[m]['swd']):.3f} | {wins} |")
    lines += ["", f"Seconds per transfer (ours, models loaded once, one thread): "
              f"median {np.median(secs):.1f}, max {np.max(secs):.1f}. Largest distance from an "
              f"output vertex to the target surface: {max(geo):.1e} of the target's size."]
    return lines


def painted_render(path, painting, size: int = 128) -> np.ndarray:
    """An unlit render (RGB on white, uint8) of a mesh painted by a rule, from the image
    guidance's reference view."""
    import math

    from flow3d.appearance.paint import painted_mesh
    from flow3d.appearance.transfer import REFERENCE_VIEW
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.splat.cameras import Cameras
    from flow3d.splat.views import render_mesh

    normed, _ = normalize_mesh(painted_mesh(load_mesh(path), painting))
    az, el = (math.radians(v) for v in REFERENCE_VIEW)
    eye = 3.0 * torch.tensor([[math.cos(el) * math.sin(az), math.sin(el),
                               math.cos(el) * math.cos(az)]])
    cam = Cameras.look_at(eye, torch.zeros(1, 3), fov_deg=40.0, width=size, height=size)
    rgba, _ = render_mesh([normed], cam)
    a = rgba[0, ..., 3:].astype(np.float64) / 255.0
    return np.round(rgba[0, ..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)


def image_transfer(models, held, n_pairs: int, steps: int) -> list[str]:
    """Image guidance: a render of a painted held-out mesh as the source, onto a held-out mesh
    of another class; the colour distance (SWD, RGB) of the result's surface to the painted
    source's surface colours, with and without the image guidance."""
    import tempfile

    from flow3d.appearance.paint import Painting, _palette
    from flow3d.appearance.transfer import TransferSettings, colors_at, load_source, transfer
    from flow3d.mesh.render import save_png

    rows = {"image guidance": [], "flow only (palette)": []}
    secs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_pairs):
            src = held[(2 * k) % len(held)]
            tgt = next(h for h in held[(2 * k + 7) % len(held):] + held
                       if class_of(h) != class_of(src))
            painting = Painting("parts", _palette(np.random.default_rng(100 + k), 4), axis=UP)
            png = save_png(painted_render(src, painting), Path(tmp) / f"src{k}.png")
            truth = painted_source(src, painting, seed=k).colors
            source = load_source(str(png))
            mesh, pts, nrm = target_samples(tgt)
            for name, guidance in (("image guidance", "image"), ("flow only (palette)", "none")):
                r = transfer(TransferSettings(steps=steps, guidance=guidance, seed=k),
                             target_mesh=mesh, source=source, models=models)
                rgb = colors_at(models.appearance, r["shape"], r["latents"], pts, nrm)
                rows[name].append(swd(truth, rgb))
                if guidance == "image":
                    secs.append(r["seconds"])
            print(f"  image pair {k}: " + ", ".join(f"{m} {v[-1]:.3f}" for m, v in rows.items()),
                  flush=True)
    lines = [f"Image guidance, {n_pairs} held-out pairs of different classes, {steps} steps: "
             "the source is a 128^2 unlit render of the painted mesh (parts rule) from the "
             "guidance's reference view; sliced Wasserstein distance (RGB) between the "
             "result's surface colours and the painted source's (lower is better):", "",
             "| method | colour SWD (mean) | worst pair | better than flow only |",
             "|---|---|---|---|"]
    base = np.array(rows["flow only (palette)"])
    for m, v in rows.items():
        v = np.array(v)
        better = f"{int((v < base).sum())}/{len(v)}" if m == "image guidance" else ""
        lines.append(f"| {m} | {v.mean():.3f} | {v.max():.3f} | {better} |")
    lines += ["", f"Seconds per image-guided transfer: median {np.median(secs):.1f}, max "
              f"{np.max(secs):.1f}."]
    return lines


def render_psnr(mesh_a, mesh_b) -> float:
    """PSNR (dB) of 6 unlit 128^2 renders of two vertex-coloured meshes over object pixels."""
    from flow3d.splat.views import render_mesh, sphere_cameras

    cams = sphere_cameras(6, radius=1.0, size=128, fov_deg=40.0, elevations=(-10.0, 50.0))
    ia, _ = render_mesh([mesh_a], cams)
    ib, _ = render_mesh([mesh_b], cams)
    mask = (ia[..., 3] > 0) | (ib[..., 3] > 0)
    d = (ia[..., :3].astype(np.float64) - ib[..., :3]) / 255.0
    return float(-10 * np.log10((d[mask] ** 2).mean()))


def self_transfer(models, held, n_meshes: int, steps: int) -> list[str]:
    import trimesh

    from flow3d.appearance.paint import KINDS, paint, random_painting
    from flow3d.appearance.transfer import TransferSettings, colors_at, subdivided, transfer
    from flow3d.mesh.data import normalize_mesh

    a = models.appearance
    lines = [f"Self-transfer ({n_meshes} held-out meshes per rule, {steps} steps, part "
             "guidance): PSNR (dB) of renders against the painted original; the appearance "
             "VAE's reconstruction is the ceiling:", "",
             "| rule | ours | VAE reconstruction |", "|---|---|---|"]
    allp, allc = [], []
    for kind in KINDS:
        ps, cs = [], []
        for j in range(n_meshes):
            path = held[(5 * j + 3) % len(held)]
            painting = random_painting(np.random.default_rng(200 + j), (kind,), axis=UP)
            source = painted_source(path, painting, seed=j)
            mesh = source.mesh  # normalised frame
            r = transfer(TransferSettings(steps=steps, guidance="part", seed=j),
                         target_mesh=mesh, source=source, models=models)
            normed, norm = normalize_mesh(mesh)
            ref, vn, nrm = subdivided(mesh, normed, norm, 0.5 * a.h)

            def colored(rgb, ref=ref, norm=norm):
                m = trimesh.Trimesh(norm.apply(np.asarray(ref.vertices)), ref.faces,
                                    process=False)
                m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=np.concatenate(
                    [(rgb * 255).round(), np.full((len(rgb), 1), 255)], 1).astype(np.uint8))
                return m

            truth = colored(paint(vn, nrm, painting))
            ours = colored(colors_at(a, r["shape"], r["latents"], vn, nrm))
            with torch.no_grad():
                sh = r["shape"]
                _, mu, _ = a.encode(sh.voxels, torch.from_numpy(source.points),
                                    torch.from_numpy(source.colors),
                                    torch.zeros(len(source.points), dtype=torch.long),
                                    torch.from_numpy(source.normals), sample=False)
            recon = colored(colors_at(a, sh, mu, vn, nrm))
            ps.append(render_psnr(truth, ours))
            cs.append(render_psnr(truth, recon))
        allp += ps
        allc += cs
        lines.append(f"| {kind} | {np.mean(ps):.1f} | {np.mean(cs):.1f} |")
        print(f"  self {kind}: ours {np.mean(ps):.1f} dB, ceiling {np.mean(cs):.1f} dB", flush=True)
    lines.append(f"| **all** | **{np.mean(allp):.1f}** | {np.mean(allc):.1f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--self-meshes", type=int, default=3)
    p.add_argument("--images", type=int, default=0, help="image-guidance pairs")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--models", default=None, help="folder with vae/ and flow/")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from flow3d.appearance.transfer import TransferSettings, load_models

    s = TransferSettings()
    t0 = time.perf_counter()
    models = load_models(args.models or s.models, s.geometry)
    load_s = time.perf_counter() - t0
    _, held = capod_files()
    held = sorted(held)
    out = ["## Appearance transfer (quality_appearance)", "",
           f"`python -m benchmarks.quality_appearance --pairs {args.pairs} --self-meshes "
           f"{args.self_meshes} --images {args.images} --steps {args.steps}`; models loaded in "
           f"{load_s:.1f} s.", ""]
    if args.pairs > 0:
        out += part_transfer(models, held, args.pairs, args.steps) + [""]
    if args.self_meshes > 0:
        out += self_transfer(models, held, args.self_meshes, args.steps) + [""]
    if args.images > 0:
        out += image_transfer(models, held, args.images, args.steps)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
