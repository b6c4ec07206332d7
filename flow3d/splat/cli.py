"""``flow3d splat ...``: each sub-command is one task module with ``add_arguments(parser)`` and
``run(args) -> int`` (its settings dataclass is built from ``args`` once, validated, and passed
down its pipeline). Modules are imported when the command line is built, lazily per head.

    flow3d splat views MESH --num 8 --size 128 --out DATASET
    flow3d splat fit DATASET --out scene.ply [--steps 3000 --sh-degree 3]
    flow3d splat render SCENE DATASET --out DIR
    flow3d splat convert IN OUT
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
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("splat", help="3D Gaussian splats: views, fit, render, convert")
    sub = p.add_subparsers(dest="splat_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written yet in this checkout
                continue
            raise
        c = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(c)
        c.set_defaults(func=module.run)
