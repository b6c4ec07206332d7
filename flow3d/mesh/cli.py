"""``flow3d mesh generate | edit | reconstruct | eval``, added to ``flow3d`` by register().

    flow3d mesh generate (--image PHOTO.png | --class chair) --out MESH.glb [--steps 50 --cfg 3
                         --resolution 256 --faces 50000 --seed 0] [--ckpt DIR] [--png T.png]
    flow3d mesh reconstruct IN_MESH --out OUT_MESH [--vae DIR] [--resolution 256]
    flow3d mesh edit IN_MESH --box x0,y0,z0,x1,y1,z1 (--class NAME | --image PNG) --out OUT.glb
    flow3d mesh retrieve --image PHOTO.png --out MESH.glb [--library DIR] [--top 3] [--raw]
                         [--candidates 16]
    flow3d mesh library --data CAPOD_DIR --out DIR [--holdout-per-class 2 --faces 2000]
    flow3d mesh eval PRED GT [--frame normalized|each|gt] [--png TURNTABLE.png] [--json REPORT.json]

Each command turns its arguments into the task's settings (:mod:`flow3d.mesh.pipeline`), which
check every value and output path once, then runs the task's pipeline and reports. Errors in
the user's input are a one-line :class:`~flow3d.errors.Flow3dError`, printed by ``flow3d`` with
exit status 2, before any model is loaded. An existing output needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time

from flow3d.cli import HelpFormatter
from flow3d.mesh.metrics import FRAMES, format_metrics
from flow3d.mesh.pipeline import (
    EditSettings,
    GenerateSettings,
    LibrarySettings,
    MeshEvalSettings,
    ReconstructSettings,
    RetrieveSettings,
    build_shape_library,
    edit,
    evaluate,
    generate,
    reconstruct,
    retrieve,
)
from flow3d.options import add_overwrite_flag

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="image-to-mesh: generate, reconstruct, eval",
                       formatter_class=HelpFormatter)
    msub = p.add_subparsers(dest="mesh_command", metavar="MESH_COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    g = msub.add_parser("generate", help="a mesh from an image (or a class)",
                        formatter_class=HelpFormatter)
    g.add_argument("--image", help="input image (PNG/JPEG), one object on a plain background")
    g.add_argument("--class", dest="label", metavar="NAME", help="CAPOD class (e.g. chair) for the "
                   "class-conditional model; cannot be combined with --image")
    g.add_argument("--out", required=True, help="output mesh (.glb, .obj, .ply, .stl)")
    g.add_argument("--ckpt", help="generator checkpoint: mesh_flow (vector-set; the default with "
                   "--image: checkpoints/mesh/flow_image) or mesh_structure (two-stage "
                   "sparse-voxel; the default with --class: checkpoints/mesh/structure_class; "
                   "from an image: checkpoints/mesh/structure_image)")
    g.add_argument("--latent-ckpt", help="two-stage only: the mesh_slat checkpoint of the latent "
                   "stage (default: checkpoints/mesh/slat)")
    g.add_argument("--steps", type=int, default=50, help="ODE solver steps (the latent stage "
                   "takes half as many)")
    g.add_argument("--cfg", type=float, default=None, help="guidance weight (0 = conditional; "
                   "default 3 two-stage, 5 vector-set)")
    g.add_argument("--resolution", type=int, default=256,
                   help="extraction grid (32 times a power of 2, up to 512)")
    g.add_argument("--faces", type=int, default=50000, help="decimate to this many faces")
    g.add_argument("--seed", type=int, default=0, help="noise seed")
    g.add_argument("--method", default="euler", help="ODE solver (flow3d.core.solvers)")
    g.add_argument("--png", help="also write a turntable PNG of the result")
    add_overwrite_flag(g)
    g.set_defaults(func=cmd_generate)

    r = msub.add_parser("reconstruct", help="encode and decode a mesh through the SDF-VAE "
                        "(sparse-voxel by default)",
                        formatter_class=HelpFormatter)
    r.add_argument("mesh", help="input mesh (any format trimesh reads)")
    r.add_argument("--out", required=True, help="output mesh (input's own coordinates)")
    r.add_argument("--vae", help="SDF-VAE checkpoint: sparse-voxel (default: "
                   "checkpoints/mesh/svae_r64; checkpoints/mesh/svae_cpu is the 32^3 one) "
                   "or vector-set (e.g. checkpoints/mesh/vae_cpu)")
    r.add_argument("--latents", type=int, default=None,
                   help="vector-set VAE only: number of latent tokens M (default 64)")
    r.add_argument("--points", type=int, default=None,
                   help="surface samples encoded (default: 8192 sparse-voxel, 4096 vector-set)")
    r.add_argument("--resolution", type=int, default=128, help="extraction grid")
    r.add_argument("--seed", type=int, default=0, help="surface sampling seed")
    add_overwrite_flag(r)
    r.set_defaults(func=cmd_reconstruct)

    d = msub.add_parser("edit", help="regenerate the part of a mesh inside a box (class- or "
                        "image-conditioned), keep the rest", formatter_class=HelpFormatter)
    d.add_argument("mesh", help="input mesh (any format trimesh reads)")
    d.add_argument("--box", required=True, metavar="x0,y0,z0,x1,y1,z1",
                   help="the region to regenerate, in the input's normalised frame (bounding-box "
                        "centre at 0, longest side spanning [-1, 1])")
    d.add_argument("--class", dest="label", metavar="NAME", help="CAPOD class the box should "
                   "follow (e.g. chair)")
    d.add_argument("--image", help="image of the object the box should follow")
    d.add_argument("--out", required=True, help="output mesh (input's own coordinates)")
    d.add_argument("--ckpt", help="mesh_structure checkpoint (default: the bundled one for the "
                   "condition)")
    d.add_argument("--latent-ckpt", help="mesh_slat checkpoint (default: checkpoints/mesh/slat)")
    d.add_argument("--steps", type=int, default=50, help="ODE solver steps")
    d.add_argument("--cfg", type=float, default=3.0, help="guidance weight")
    d.add_argument("--resolution", type=int, default=256, help="extraction grid")
    d.add_argument("--seed", type=int, default=0, help="noise seed")
    add_overwrite_flag(d)
    d.set_defaults(func=cmd_edit)

    t = msub.add_parser("retrieve", help="the library shape whose silhouette matches an image "
                        "best (any view, any colours)", formatter_class=HelpFormatter)
    t.add_argument("--image", required=True, help="input image (PNG/JPEG), one object on a "
                   "plain background")
    t.add_argument("--out", required=True, help="output mesh (.glb, .obj, .ply, .stl), in the "
                   "normalised frame")
    t.add_argument("--library", help="shape library folder (default: checkpoints/mesh/library, "
                   "the CAPOD training meshes; build one with flow3d mesh library)")
    t.add_argument("--vae", help="sparse-voxel SDF-VAE the shape passes through (default: "
                   "checkpoints/mesh/svae_r64)")
    t.add_argument("--raw", action="store_true", help="write the library's decimated mesh as "
                   "it is, without the SDF-VAE (not watertight in general)")
    t.add_argument("--top", type=int, default=3, help="matches to report")
    t.add_argument("--candidates", type=int, default=16, help="best shapes whose views are "
                   "searched again every 5 degrees around their best library view (0: the "
                   "library's 24 views only; about 0.15 s each)")
    t.add_argument("--resolution", type=int, default=256, help="extraction grid of the VAE")
    t.add_argument("--png", help="also write a turntable PNG of the result")
    add_overwrite_flag(t)
    t.set_defaults(func=cmd_retrieve)

    b = msub.add_parser("library", help="build the shape library of flow3d mesh retrieve from "
                        "CAPOD meshes", formatter_class=HelpFormatter)
    b.add_argument("--data", required=True, help="CAPOD folder (class1 ... class15 of .obj)")
    b.add_argument("--out", required=True, help="library folder to write")
    b.add_argument("--holdout-per-class", type=int, default=2, help="meshes per class left out "
                   "(2: the split the bundled mesh models were trained on)")
    b.add_argument("--faces", type=int, default=2000, help="faces per shape (decimated)")
    add_overwrite_flag(b)
    b.set_defaults(func=cmd_library)

    e = msub.add_parser("eval", help="metrics of a predicted mesh against the ground truth",
                        formatter_class=HelpFormatter)
    e.add_argument("pred", help="predicted mesh")
    e.add_argument("gt", help="ground-truth mesh")
    e.add_argument("--frame", default="normalized", choices=list(FRAMES),
                   help="normalized: a generated mesh against the normalised ground truth; "
                        "each: both normalised on their own (a prediction in other coordinates); "
                        "gt: both through the ground truth's normalisation (one coordinate "
                        "system)")
    e.add_argument("--points", type=int, default=100_000, help="surface samples per mesh")
    e.add_argument("--png", help="also write a turntable PNG of the prediction")
    e.add_argument("--json", help="also write the report to this file")
    add_overwrite_flag(e)
    e.set_defaults(func=cmd_eval)


def _wrote(out: str, mesh, started: float, png: str | None) -> None:
    """The report of a command that wrote one mesh (and maybe its turntable)."""
    print(f"wrote {out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
          f"watertight={mesh.is_watertight}, {time.perf_counter() - started:.1f} s")
    if png:
        print(f"wrote {png}")


def cmd_generate(args: argparse.Namespace) -> int:
    settings = GenerateSettings(
        image=args.image, label=args.label, ckpt=args.ckpt, latent_ckpt=args.latent_ckpt,
        steps=args.steps, cfg=args.cfg,
        method=args.method, seed=args.seed, resolution=args.resolution, faces=args.faces,
        out=args.out, png=args.png, overwrite=args.overwrite,
    )
    started = time.perf_counter()
    mesh = generate(settings)
    _wrote(settings.out, mesh, started, settings.png)
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    settings = ReconstructSettings(
        mesh=args.mesh, vae=args.vae, latents=args.latents, points=args.points,
        resolution=args.resolution, seed=args.seed, out=args.out, overwrite=args.overwrite,
    )
    recon = reconstruct(settings)
    print(f"wrote {settings.out}: {len(recon.vertices)} vertices, {len(recon.faces)} faces, "
          f"watertight={recon.is_watertight}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    settings = EditSettings(
        mesh=args.mesh, box=args.box, image=args.image, label=args.label, ckpt=args.ckpt,
        latent_ckpt=args.latent_ckpt, steps=args.steps, cfg=args.cfg, seed=args.seed,
        resolution=args.resolution, out=args.out, overwrite=args.overwrite,
    )
    started = time.perf_counter()
    result = edit(settings)
    mesh = result["mesh"]
    print(f"wrote {settings.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
          f"watertight={mesh.is_watertight}; {result['voxels_kept']} voxels kept outside the "
          f"box, {result['voxels_in_box']} generated inside, "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from flow3d.mesh.data import CAPOD_CLASSES

    settings = RetrieveSettings(
        image=args.image, library=args.library, vae=args.vae, raw=args.raw, top=args.top,
        candidates=args.candidates, resolution=args.resolution, out=args.out, png=args.png,
        overwrite=args.overwrite,
    )
    started = time.perf_counter()
    result = retrieve(settings)
    if result["warning"]:
        print(f"warning: {args.image}: {result['warning']}", file=sys.stderr)
    for rank, m in enumerate(result["matches"], 1):
        label = f" ({CAPOD_CLASSES[m.label]})" if 0 <= m.label < len(CAPOD_CLASSES) else ""
        print(f"{rank}. {m.name}{label}: silhouette IoU {m.iou:.3f} from azimuth "
              f"{m.azimuth:g}, elevation {m.elevation:g}")
    _wrote(settings.out, result["mesh"], started, settings.png)
    return 0


def cmd_library(args: argparse.Namespace) -> int:
    from flow3d.mesh.library import VIEW_AZIMUTHS

    settings = LibrarySettings(data=args.data, out=args.out,
                               holdout_per_class=args.holdout_per_class, faces=args.faces,
                               overwrite=args.overwrite)
    library = build_shape_library(settings)
    print(f"wrote {settings.out}: {len(library)} shapes, {len(VIEW_AZIMUTHS)} silhouettes each")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    settings = MeshEvalSettings(
        pred=args.pred, gt=args.gt, frame=args.frame, points=args.points, json=args.json,
        png=args.png, overwrite=args.overwrite,
    )
    report = evaluate(settings)
    print(f"frame: {settings.frame} ({FRAMES[settings.frame]})")
    print(format_metrics({k: v for k, v in report.items() if isinstance(v, float)}))
    for path in (settings.png, settings.json):
        if path:
            print(f"wrote {path}")
    return 0
