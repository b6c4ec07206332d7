"""Image-to-mesh on held-out CAPOD meshes: the two-stage sparse-voxel generator against the
vector-set flow and two baselines, on the protocol of ``bench_mesh --quality --part image``
(issue 15), plus renders unlike the training ones.

    python -m benchmarks.quality_mesh_generate [--max-heldout 30] [--steps 50] [--cfg 3]

Inputs per held-out mesh (never trained on):
* ``render``: the grey headlight render from the first conditioning view (the protocol of
  ``bench_mesh``; the training set used the same view of *other* meshes);
* ``styled``: a coloured object (random hue), lit from the side by a directional light, on a
  coloured background, from a random view (pyrender; skipped without EGL) -- unlike every
  training render, which is grey, headlit, on white, from six fixed views.

Methods: ``silhouette retrieval`` (``flow3d mesh retrieve``: the bundled library of the
training meshes searched by silhouette over 24 views, through the svae_r64 SDF-VAE at the
extraction resolution), ``two-stage`` (checkpoints/mesh/structure_image + slat), ``vector set``
(checkpoints/mesh/flow_image, cfg 5), ``retrieval`` (the training mesh whose render has the
nearest pooled image feature; both image encoders tried, the better one reported),
``class mean`` (oracle class). Scores: :func:`flow3d.mesh.metrics.mesh_metrics` in the ground
truth's frame, 100k points. Prints markdown; wall time per generated mesh is the median.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_mesh import (
    CKPT,
    _mean,
    _or_none,
    _score,
    capod_files,
    class_mean_meshes,
    class_of,
)


def styled_render(mesh, seed: int, size: int = 128) -> np.ndarray | None:
    """A coloured, side-lit render on a coloured background (uint8 [H, W, 3]), or None
    without pyrender/EGL."""
    import os

    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        import pyrender
        import trimesh
    except ImportError:
        return None
    from flow3d.mesh.render import make_cameras

    rng = np.random.default_rng(seed)
    lo, hi = mesh.bounds
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(mesh.vertices - center, axis=1).max())
    cams = make_cameras(center, radius, [rng.uniform(5, 35)], [rng.uniform(0, 360)], size)
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9))
    bg = [0.55, 0.65, 0.8] if rng.uniform() < 0.5 else [0.9, 0.85, 0.7]
    material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[*rgb, 1.0],
                                                  metallicFactor=0.0, roughnessFactor=0.6,
                                                  doubleSided=True)
    scene = pyrender.Scene(bg_color=[*bg, 1.0], ambient_light=[0.12] * 3)
    plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    scene.add(pyrender.Mesh.from_trimesh(plain, material=material, smooth=False))
    ext, k = cams["extrinsics"][0], cams["intrinsics"][0]
    pose = np.linalg.inv(ext) @ np.diag([1.0, -1.0, -1.0, 1.0])
    scene.add(pyrender.IntrinsicsCamera(k[0, 0], k[1, 1], k[0, 2], k[1, 2], znear=0.01,
                                        zfar=1e4), pose=pose)
    a = math.radians(rng.choice([-70.0, 70.0]))  # light from the side, about the up axis
    turn = np.array([[math.cos(a), 0, math.sin(a), 0], [0, 1, 0, 0],
                     [-math.sin(a), 0, math.cos(a), 0], [0, 0, 0, 1]])
    scene.add(pyrender.DirectionalLight(intensity=4.0), pose=turn @ pose)
    renderer = pyrender.OffscreenRenderer(size, size)
    try:
        color, _ = renderer.render(scene)
    except Exception:  # noqa: BLE001 - no EGL here
        return None
    finally:
        renderer.delete()
    return np.asarray(color[..., :3], dtype=np.uint8)


def retrieval_db(encoder, train: list[Path]):
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.head import condition_images

    feats, owners = [], []
    with torch.no_grad():
        for i, f in enumerate(train):
            mesh, _ = normalize_mesh(load_mesh(f))
            imgs = condition_images(mesh, encoder.resolution)
            feats.append(torch.nn.functional.normalize(encoder.pooled(imgs), dim=-1))
            owners += [i] * len(imgs)
    return torch.cat(feats), np.array(owners)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-heldout", type=int, default=30)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--inputs", nargs="+", default=["render", "styled"])
    p.add_argument("--json")
    p.add_argument("--no-generators", action="store_true",
                   help="baselines and silhouette retrieval only (the generators' rows are "
                        "deterministic: seed 0)")
    args = p.parse_args()
    torch.set_num_threads(1)

    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.head import CONDITION_AZIMUTHS, CONDITION_ELEVATIONS
    from flow3d.mesh.image_encoder import prepare_image
    from flow3d.mesh.library import ShapeLibrary
    from flow3d.mesh.pipeline import GenerateSettings, RetrieveSettings, generate, retrieve
    from flow3d.mesh.render import render_views
    from flow3d.mesh.sparse_generate import load_two_stage

    train, held = capod_files()
    held = held[:: max(1, len(held) // args.max_heldout)][: args.max_heldout]
    two = load_two_stage(CKPT / "structure_image", CKPT / "slat")
    vec = load_model(CKPT / "flow_image", head_name="mesh_flow")
    encoders = {"vector set": vec.model.image_encoder,
                "two-stage": two.structure.model.image_encoder}
    dbs = {k: retrieval_db(e, train) for k, e in encoders.items()}
    means = class_mean_meshes(train)
    library = ShapeLibrary.load(CKPT / "library")
    held_names = {f"{f.parent.name}/{f.stem}" for f in held}
    assert not held_names & set(library.names), "the library holds a held-out mesh"
    svae = load_model(CKPT / "svae_r64", head_name="mesh_svae").model
    results: dict = {}
    times: list[float] = []
    retrieve_times: list[float] = []
    for kind in args.inputs:
        rows: dict[str, list] = {}
        for n, f in enumerate(held):
            gt = load_mesh(f)
            gt_n, norm = normalize_mesh(gt)
            if kind == "render":  # what condition_images draws, kept as pixels
                pixels = render_views(gt_n, 1, 96, elevations=list(CONDITION_ELEVATIONS[:1]),
                                      azimuths=list(CONDITION_AZIMUTHS[:1]),
                                      backend="numpy")[0][0]
            else:
                pixels = styled_render(gt_n, seed=n)
                if pixels is None:
                    print("(styled renders skipped: no pyrender/EGL)")
                    break
            img = prepare_image(pixels, 64)
            preds = {"class mean": means[class_of(f)]}
            for name, enc in encoders.items():
                feats, owners = dbs[name]
                with torch.no_grad():
                    q = torch.nn.functional.normalize(enc.pooled(img[None]), dim=-1)
                best = train[int(owners[int((feats @ q[0]).argmax())])]
                preds[f"retrieval ({name} encoder)"], _ = normalize_mesh(load_mesh(best))
            t0 = time.perf_counter()
            found = retrieve(RetrieveSettings(resolution=args.resolution), image=pixels,
                             library=library, vae=svae)
            preds["silhouette retrieval (library, SDF-VAE)"] = found["mesh"]
            retrieve_times.append(time.perf_counter() - t0)
            if args.no_generators:
                for name, pred in preds.items():
                    rows.setdefault(name, []).append(_score(pred, gt, norm))
                print(f"  {kind} {n + 1}/{len(held)}", flush=True)
                continue
            t0 = time.perf_counter()
            s = GenerateSettings(steps=args.steps, cfg=args.cfg, resolution=args.resolution)
            preds[f"two-stage (cfg {args.cfg:g})"] = _or_none(generate, s, image=img,
                                                                models=two)
            times.append(time.perf_counter() - t0)
            s = GenerateSettings(steps=args.steps, cfg=5.0, resolution=args.resolution)
            preds["vector set (cfg 5)"] = _or_none(generate, s, image=img, models=vec)
            for name, pred in preds.items():
                rows.setdefault(name, []).append(_score(pred, gt, norm))
            print(f"  {kind} {n + 1}/{len(held)}", flush=True)
        if rows:
            results[kind] = {k: {kk: _mean(v, kk) for kk in v[0]} | {"n": len(v)}
                             for k, v in rows.items()}
    two_stage = f"two-stage median {np.median(times):.1f} s, " if times else ""
    print(f"\n## Image to mesh, held-out CAPOD ({len(held)} meshes, {args.steps} steps, "
          f"extraction {args.resolution}^3; {two_stage}silhouette retrieval "
          f"{np.median(retrieve_times):.1f} s per mesh on one thread)\n")
    print("| input | method | F@0.05 | F@0.02 | normal consistency | Chamfer-L1 | watertight "
          "| one piece |\n|---|---|---|---|---|---|---|---|")
    for kind, table in results.items():
        for name, m in table.items():
            print(f"| {kind} | {name} | {m['fscore@0.05']:.3f} | {m['fscore@0.02']:.3f} | "
                  f"{m['normal_consistency']:.3f} | {m['chamfer_l1']:.4f} | "
                  f"{m['watertight']:.2f} | {m['one_piece']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "seconds": times}, indent=1))


if __name__ == "__main__":
    main()
