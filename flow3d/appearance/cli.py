"""``flow3d appearance transfer``, added to ``flow3d`` by register().

    flow3d appearance transfer --target MESH --source TEXTURED_MESH_OR_IMAGE --out OUT.glb
                               [--splat OUT.ply] [--steps 50 --guidance part|image|self|none
                               --seed 0 --cfg 2]

The command turns its arguments into :class:`~flow3d.appearance.transfer.TransferSettings`,
which check every value and the output path once; broken inputs are a one-line error with exit
status 2 before any model is loaded. An existing output needs ``--overwrite``.
"""

from __future__ import annotations

import argparse

from flow3d.cli import HelpFormatter
from flow3d.options import add_overwrite_flag

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("appearance", help="appearance transfer onto a mesh (GuideFlow3D)",
                       formatter_class=HelpFormatter)
    asub = p.add_subparsers(dest="appearance_command", metavar="APPEARANCE_COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    t = asub.add_parser("transfer", help="paint a mesh like a textured mesh or an image",
                        formatter_class=HelpFormatter)
    t.add_argument("--target", required=True, help="the mesh to paint (its geometry is kept)")
    t.add_argument("--source", required=True, help="a textured or coloured mesh (GLB, OBJ, "
                   "PLY, ...) or an image (PNG, JPEG) whose appearance to transfer")
    t.add_argument("--out", required=True, help="output .glb with vertex colours, in the "
                   "target's own coordinates")
    t.add_argument("--splat", help="also write the result as Gaussians on the surface (.ply "
                   "INRIA, .splat, .spz) for `flow3d view`")
    t.add_argument("--steps", type=int, default=50, help="flow steps")
    t.add_argument("--guidance", default=None, help="part (match co-segmented parts of a "
                   "mesh source; the default for a mesh), image (match an image's colours; the "
                   "default for an image), self (keep the target's parts coherent) or none "
                   "(the flow and the palette only)")
    t.add_argument("--seed", type=int, default=0, help="noise seed")
    t.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance on the "
                   "source's palette (0 = conditional)")
    t.add_argument("--lr", type=float, default=0.1, help="guidance: AdamW step size on the "
                   "state after every flow step (0 = no guidance steps)")
    t.add_argument("--models", default=None, help="folder holding the appearance vae/ and "
                   "flow/ checkpoints (default: checkpoints/appearance)")
    add_overwrite_flag(t)
    t.set_defaults(func=cmd_transfer)


def cmd_transfer(args: argparse.Namespace) -> int:
    from flow3d.appearance.transfer import TransferSettings, _is_image, transfer

    extra = {"models": args.models} if args.models else {}
    guidance = args.guidance or ("image" if _is_image(args.source) else "part")
    settings = TransferSettings(target=args.target, source=args.source, out=args.out,
                                splat=args.splat,
                                steps=args.steps, guidance=guidance, seed=args.seed,
                                cfg=args.cfg, lr=args.lr, overwrite=args.overwrite, **extra)
    result = transfer(settings)
    mesh = result["mesh"]
    print(f"wrote {settings.out}: {len(mesh.vertices)} coloured vertices, {len(mesh.faces)} "
          f"faces; {settings.guidance} guidance, {result['nfe']} network calls, "
          f"{result['seconds']:.1f} s")
    if settings.splat:
        print(f"wrote {settings.splat}")
    return 0
