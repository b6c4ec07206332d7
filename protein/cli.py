"""``flow3d protein ...``: design backbones, evaluate designs or real chains, build the cache.

    flow3d protein design --length 100 --num 8 --steps 50 --seed 0 --out designs/
    flow3d protein design --lengths 60,100,150 --format cif --trajectory --out designs/
    flow3d protein design --length 80 --motif 1abc.pdb --motif-segments A10-25@30 --out m/
    flow3d protein design --topology 1abc.pdb:A --num 8 --out folds/
    flow3d protein eval designs/ --reference ../shared/data/proteins/ts50_pydssp/pdb
    flow3d protein cache [recipes/protein/tiny.yaml] [--force]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow3d.errors import ConfigError

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "protein" / "tiny.yaml"


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lengths {text!r}: expected e.g. 60,100,150") from None
    if not values:
        raise argparse.ArgumentTypeError("--lengths is empty")
    return values


def cmd_design(args: argparse.Namespace) -> int:
    from protein.design import design

    lengths = args.lengths if args.lengths else (args.length,)
    report = design(
        args.out, lengths=lengths, num=args.num, steps=args.steps, seed=args.seed,
        checkpoint=args.checkpoint, fmt=args.format, trajectory=args.trajectory,
        method=args.method, rot_rate=args.rot_rate, residue=args.residue,
        clash_guidance=args.clash_guidance, guidance_iters=args.guidance_iters,
        batch_size=args.batch_size, ema=not args.no_ema, device=args.device,
        progress=not args.no_progress, motif=args.motif, motif_segments=args.motif_segments,
        ss=args.ss, topology=args.topology, topology_from=args.topology_from,
    )  # fmt: skip
    n = len(report.designs)
    print(f"wrote {n} designs to {report.out_dir} in {report.seconds:.1f} s "
          f"({report.seconds / max(n, 1):.2f} s per design; checkpoint {report.checkpoint})")
    if report.motif is not None:
        mean = report.motif["mean"]
        valid = mean["junction_valid"]
        print(f"motif {report.motif['segments']} of {report.motif['source']}: motif RMSD "
              f"{mean['motif_rmsd']:.2f} A, junction CA-CA within 3.8 +/- 0.2 A "
              f"{'-' if valid is None else f'{valid:.2f}'}, motif-scaffold clashes "
              f"{mean['motif_scaffold_clashes']:.2f} per design (motif.json)")
    if report.topology is not None:
        print(f"fold plans followed: DSSP agrees with the plan on "
              f"{report.topology['mean']['agreement']:.2f} of residues (topology.json)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from protein.eval import eval_from_args, format_summary

    summary, out = eval_from_args(args)
    print(format_summary(summary))
    print(f"wrote {out}/designs.csv, summary.json and plots")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from flow3d.engine.config import load_recipe
    from protein.head import ProteinHead

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.head != "protein":
        raise ConfigError(f"{args.recipe}: head is {recipe.head!r}, not 'protein'")
    head = ProteinHead(recipe)
    path = head.build_cache(force=args.force)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    print(f"protein cache {path}: {len(meta.get('names', []))} chains")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``flow3d protein {design,eval,cache}``."""
    from protein.eval import add_eval_arguments

    p = subparsers.add_parser("protein", help="protein backbones (ReQFlow): design, eval, cache")
    sub = p.add_subparsers(dest="protein_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    d = sub.add_parser("design", help="design backbones with a checkpoint (default: bundled)")
    d.add_argument("--length", type=int, default=100, help="residues per design (default 100)")
    d.add_argument("--lengths", type=_lengths, default=None, help="several lengths: 60,100,150")
    d.add_argument("--num", type=int, default=8, help="designs per length (default 8)")
    d.add_argument("--steps", type=int, default=50, help="solver steps (default 50)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--format", choices=("pdb", "cif"), default="pdb")
    d.add_argument("--trajectory", action="store_true",
                   help="also write the path as MODEL records (OUT_trajectories/)")
    d.add_argument("--checkpoint", default=None,
                   help="checkpoint dir (default: bundled tiny_reflow_guided)")
    d.add_argument("--method", default=None, help="solver: euler, midpoint, heun, rk4, dopri5")
    d.add_argument("--rot-rate", type=float, default=None,
                   help="exponential rotation schedule rate (default: the recipe's; "
                        "capped at --steps)")
    d.add_argument("--clash-guidance", type=float, default=None, metavar="STRENGTH",
                   help="steer predicted CA positions away from steric clashes while t is in "
                        "the recipe's sample.guidance_window (default [0.5, 1)); an "
                        "inference-time prior, strength in [0, 1]; 0 = off (default: the "
                        "checkpoint's recipe; the bundled default samples with 1.0)")
    d.add_argument("--guidance-iters", type=int, default=None, metavar="N",
                   help="gradient steps of clash guidance per network evaluation (default: the "
                        "recipe's, 10; 30 with --motif). 30 gives cleaner geometry at 50+ steps "
                        "but less secondary structure at 10 (docs/benchmarks.md)")
    d.add_argument("--motif", default=None, metavar="FILE",
                   help="scaffold a motif from this PDB/mmCIF file (with --motif-segments)")
    d.add_argument("--motif-segments", default=None, metavar="SPEC",
                   help="motif residues and their design positions (1-based): "
                        "CHAIN FIRST-LAST@POSITION, comma-separated, e.g. A10-25@30,A40-45@70; "
                        "@20-40 lets each design draw the segment's start in 20..40")
    d.add_argument("--ss", default=None, metavar="PLAN",
                   help="fold conditioning: a secondary-structure plan, one letter per residue "
                        "(H helix, E strand, L loop, ? free), e.g. LLEEEEELLEEEEELL...; sets "
                        "the length; default checkpoint then tiny_topology")
    d.add_argument("--topology", default=None, metavar="FILE[:CHAIN]",
                   help="fold conditioning: follow this chain's secondary structure and which "
                        "of its helices and strands pack together (sets the length)")
    d.add_argument("--topology-from", default=None, metavar="DIR_OR_CACHE",
                   help="fold conditioning: each design draws the plan of a random chain of "
                        "this reference set, cropped to its length")
    d.add_argument("--residue", choices=("GLY", "ALA"), default=None)
    d.add_argument("--batch-size", type=int, default=None)
    d.add_argument("--device", default="cpu")
    d.add_argument("--no-ema", action="store_true", help="raw weights instead of EMA")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_design)

    e = sub.add_parser("eval", help="evaluate designs (or real chains) and write CSV/JSON/PNG")
    add_eval_arguments(e)
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("cache", help="build the preprocessed training cache once")
    c.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--force", action="store_true", help="rebuild even if it exists")
    c.set_defaults(func=cmd_cache)
