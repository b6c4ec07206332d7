"""``flow3d mesh generate | reconstruct | eval``: added to the ``flow3d`` command by register().

    flow3d mesh generate --image PHOTO.png --out MESH.glb [--steps 50 --cfg 5 --resolution 128
                         --faces 50000 --seed 0] [--class chair] [--ckpt DIR]
    flow3d mesh reconstruct IN_MESH --out OUT_MESH [--vae DIR]
    flow3d mesh eval PRED GT [--png TURNTABLE.png] [--json REPORT.json]

Errors in the user's input (missing image, unreadable mesh, wrong checkpoint) are a one-line
:class:`~flow3d.errors.Flow3dError`, printed by ``flow3d`` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flow3d.errors import DataError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="image-to-mesh: generate, reconstruct, eval")
    msub = p.add_subparsers(dest="mesh_command", metavar="MESH_COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    g = msub.add_parser("generate", help="a mesh from an image (or a class)")
    g.add_argument("--image", help="input image (PNG/JPEG), object on a plain background")
    g.add_argument("--class", dest="label", help="CAPOD class (e.g. chair) for the "
                   "class-conditional model; selects checkpoints/mesh/flow_class")
    g.add_argument("--out", required=True, help="output mesh (.glb, .obj, .ply, .stl)")
    g.add_argument("--ckpt", help="mesh_flow checkpoint (default: the bundled one)")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--cfg", type=float, default=5.0, help="guidance weight (0 = conditional)")
    g.add_argument("--resolution", type=int, default=128,
                   help="extraction grid (32 times a power of 2, up to 512)")
    g.add_argument("--faces", type=int, default=50000, help="decimate to this many faces")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--method", default="euler", help="ODE solver (flow3d.core.solvers)")
    g.add_argument("--png", help="also write a turntable PNG of the result")
    g.set_defaults(func=cmd_generate)

    r = msub.add_parser("reconstruct", help="encode and decode a mesh through the SDF-VAE")
    r.add_argument("mesh", help="input mesh (any format trimesh reads)")
    r.add_argument("--out", required=True, help="output mesh (input's own coordinates)")
    r.add_argument("--vae", help="mesh_vae checkpoint (default: the bundled one)")
    r.add_argument("--latents", type=int, default=64, help="number of latent tokens M")
    r.add_argument("--resolution", type=int, default=128)
    r.set_defaults(func=cmd_reconstruct)

    e = msub.add_parser("eval", help="metrics of a predicted mesh against the ground truth")
    e.add_argument("pred")
    e.add_argument("gt")
    e.add_argument("--points", type=int, default=100_000, help="surface samples per mesh")
    e.add_argument("--png", help="turntable PNG of the prediction (default: PRED.png)")
    e.add_argument("--json", help="also write the metrics to this file")
    e.set_defaults(func=cmd_eval)


def _out_path(path: str) -> Path:
    from flow3d.mesh.postprocess import EXPORT_FORMATS

    out = Path(path)
    if out.suffix.lower() not in EXPORT_FORMATS:
        raise DataError(f"{out}: unsupported output format (use {', '.join(EXPORT_FORMATS)})")
    return out


def _check_resolution(res: int) -> None:
    if res < 32 or res > 512 or res & (res - 1):
        raise DataError(f"--resolution {res}: must be a power of two between 32 and 512")


def cmd_generate(args: argparse.Namespace) -> int:
    from flow3d.mesh.generate import CHECKPOINTS, generate_mesh, load_pipeline
    from flow3d.mesh.postprocess import export_mesh

    out = _out_path(args.out)
    _check_resolution(args.resolution)
    if args.image is None and args.label is None:
        raise DataError("give --image PHOTO.png (or --class NAME for the class model)")
    if args.image is not None and not Path(args.image).is_file():
        raise DataError(f"{args.image}: image file not found")
    default = CHECKPOINTS / ("flow_image" if args.image is not None else "flow_class")
    pipe = load_pipeline(args.ckpt or default)
    t0 = time.perf_counter()
    mesh = generate_mesh(pipe, args.image, args.label, steps=args.steps, cfg=args.cfg,
                         resolution=args.resolution, faces=args.faces, seed=args.seed,
                         method=args.method)
    export_mesh(mesh, out)
    print(f"wrote {out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
          f"watertight={mesh.is_watertight}, {time.perf_counter() - t0:.1f} s")
    if args.png:
        from flow3d.mesh.render import turntable_png

        turntable_png(mesh, args.png, backend="numpy")
        print(f"wrote {args.png}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from flow3d.mesh.data import load_mesh
    from flow3d.mesh.generate import CHECKPOINTS, reconstruct_mesh, resolve_checkpoint
    from flow3d.mesh.head import load_vae
    from flow3d.mesh.postprocess import export_mesh

    out = _out_path(args.out)
    _check_resolution(args.resolution)
    mesh = load_mesh(args.mesh)
    vae = load_vae(resolve_checkpoint(args.vae or CHECKPOINTS / "vae_cpu"))
    try:
        recon = reconstruct_mesh(vae, mesh, num_latents=args.latents, resolution=args.resolution)
    except DataError as e:  # the decoder's complaint, said about the user's file
        raise DataError(f"{args.mesh}: cannot reconstruct: {e}") from e
    export_mesh(recon, out)
    print(f"wrote {out}: {len(recon.vertices)} vertices, {len(recon.faces)} faces, "
          f"watertight={recon.is_watertight}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from flow3d.io import atomic_write_text
    from flow3d.mesh.data import load_mesh
    from flow3d.mesh.metrics import format_metrics, mesh_metrics
    from flow3d.mesh.render import turntable_png

    pred, gt = load_mesh(args.pred), load_mesh(args.gt)
    metrics = mesh_metrics(pred, gt, n_points=args.points)
    metrics["watertight"] = float(pred.is_watertight)
    print(format_metrics(metrics))
    png = Path(args.png) if args.png else Path(args.pred).with_suffix(".png")
    turntable_png(pred, png, backend="numpy")
    print(f"wrote {png}")
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=1))
    return 0
