"""``flow3d splat ...``: each sub-command is one task module with ``add_arguments(parser)`` and
``run(args) -> int`` (its settings dataclass is built from ``args`` once, validated, and passed
down its pipeline). Modules are imported when the command line is built, lazily per head.

    flow3d splat views MESH --num 8 --size 128 --out DATASET
    flow3d splat fit DATASET --out scene.ply [--steps 3000 --sh-degree 3]
    flow3d splat render SCENE DATASET --out DIR
    flow3d splat convert IN OUT
    flow3d splat reconstruct DATASET --out scene.ply
    flow3d splat generate --class chair --out scene.ply
    flow3d splat complete DATASET --known 0,1,2,3 --out completed/
    flow3d splat edit DATASET --mask MASKS --class airplane --out edited/
    flow3d splat poses DATASET --out posed/
"""

from __future__ import annotations

import argparse
import importlib

# sub-command -> (task module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "views": ("flow3d.splat.views", "render a mesh into a posed-image dataset (transforms.json)"),
    "fit": ("flow3d.splat.fit", "fit Gaussians to a posed-image dataset (3DGS on a CPU)"),
    "render": ("flow3d.splat.render_views", "render a scene at the cameras of a dataset"),
    "convert": ("flow3d.splat.formats", "convert between .ply, .splat and .spz by extension"),
    "reconstruct": ("flow3d.splat.reconstruct",
                    "Gaussians from posed views with depth in one pass (GSDecoder)"),
    "generate": ("flow3d.splat.splatflow:generate", "generate a scene of a class (SplatFlow)"),
    "complete": ("flow3d.splat.splatflow:complete",
                 "generate the missing views of a scene and decode it (SplatFlow)"),
    "edit": ("flow3d.splat.splatflow:edit",
             "regenerate masked regions of a scene's views under a class (SplatFlow)"),
    "poses": ("flow3d.splat.splatflow:poses", "estimate the cameras of a set of views"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("splat", help="3D Gaussian splats: views, fit, render, convert")
    sub = p.add_subparsers(dest="splat_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    for name, (target, help_text) in COMMANDS.items():
        module_name, _, task = target.partition(":")  # "module:task": add_<task>_arguments
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written yet in this checkout
                continue
            raise
        c = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if task:
            getattr(module, f"add_{task}_arguments")(c)
            c.set_defaults(func=getattr(module, f"run_{task}"))
        else:
            module.add_arguments(c)
            c.set_defaults(func=module.run)
