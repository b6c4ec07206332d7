"""``flow3d protein ...``: design backbones, evaluate designs or real chains, build the cache.

    flow3d protein design --length 100 --num 8 --steps 50 --seed 0 --out designs/
    flow3d protein design --lengths 60,100,150 --format cif --trajectory --out designs/
    flow3d protein design --length 80 --motif 1abc.pdb --motif-segments A10-25@30 --out m/
    flow3d protein design --topology 1abc.pdb:A --num 8 --out folds/
    flow3d protein design ... --out designs/ --resume      # continue an interrupted run
    flow3d protein eval designs/ --reference ../shared/data/proteins/ts50_pydssp/pdb
    flow3d protein cache [recipes/protein/tiny.yaml] [--force]
    flow3d protein plans recipes/protein/topology.yaml --out plans.npz

Each command turns its flags into one settings object (:mod:`protein.settings`), which checks
every value with a one-line error naming the option. The command modules import torch, so they
are imported when a command runs: ``flow3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flow3d.errors import ConfigError
from flow3d.options import add_overwrite_flag, float_range, int_range

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "protein" / "tiny.yaml"
HELP = argparse.ArgumentDefaultsHelpFormatter


def _lengths(text: str) -> tuple[int, ...]:
    parse = int_range()
    try:
        return tuple(parse(x) for x in text.replace(" ", "").split(",") if x)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 60,100,150") from None


def _distances(text: str) -> tuple[float, ...]:
    from protein.settings import local_min_dist

    parse = float_range()
    try:
        values = tuple(parse(x) for x in text.replace(" ", "").split(","))
        return local_min_dist(values[0] if len(values) == 1 else values)
    except (argparse.ArgumentTypeError, ConfigError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 5,4.8,5 or 0 ({e})") from None


def _warn(message: str) -> None:
    print(f"flow3d: warning: {message}", file=sys.stderr, flush=True)


def design_settings(args: argparse.Namespace):
    """The :class:`protein.settings.DesignSettings` of ``flow3d protein design``'s flags."""
    from protein.settings import DesignSettings, SamplerSettings

    if args.lengths is not None:
        lengths = args.lengths
    else:
        lengths = None if args.length is None else (args.length,)
    sampler = SamplerSettings(steps=args.steps, method=args.method, rot_rate=args.rot_rate,
                              clash_guidance=args.clash_guidance,
                              guidance_iters=args.guidance_iters,
                              trans_noise=args.trans_noise,
                              trans_noise_scale=args.trans_noise_scale,
                              local_min_dist=args.local_min_dist,
                              sheet_guidance=args.sheet_guidance)
    return DesignSettings(
        lengths=lengths, num=args.num, seed=args.seed, sampler=sampler,
        batch_size=args.batch_size, residue=args.residue, format=args.format,
        trajectory=args.trajectory, motif=args.motif, motif_segments=args.motif_segments,
        ss=args.ss, topology=args.topology, topology_from=args.topology_from,
        no_plan=args.no_plan,
        checkpoint=args.checkpoint, ema=not args.no_ema, pair_precision=args.pair_precision,
    )  # fmt: skip


def cmd_design(args: argparse.Namespace) -> int:
    from protein.design import prepare_design

    run = prepare_design(design_settings(args), args.out, overwrite=args.overwrite,
                         resume=args.resume, device=args.device)
    if run.warning:
        _warn(run.warning)
    report = run.execute(progress=not args.no_progress)
    n = len(report.designs)
    kept = f", {report.resumed} kept from the earlier run" if report.resumed else ""
    print(f"wrote {n} designs to {report.out_dir} in {report.seconds:.1f} s "
          f"({report.seconds / max(n, 1):.2f} s per design{kept}; checkpoint "
          f"{report.checkpoint})")
    if report.motif is not None:
        mean = report.motif["mean"]
        valid = mean["junction_valid"]
        print(f"motif {report.motif['segments']} of {report.motif['source']}: motif RMSD "
              f"{mean['motif_rmsd']:.2f} A, junction CA-CA within 3.8 +/- 0.2 A "
              f"{'-' if valid is None else f'{valid:.2f}'}, motif-scaffold clashes "
              f"{mean['motif_scaffold_clashes']:.2f} per design (motif.json)")
    if report.topology is not None:
        agreement = report.topology["mean"]["agreement"]
        print(f"fold plans followed: DSSP agrees with the plan on "
              f"{'-' if agreement is None else f'{agreement:.2f}'} of residues (topology.json)")
    return 0


def eval_settings(args: argparse.Namespace):
    """The :class:`protein.settings.EvalSettings` of ``flow3d protein eval``'s flags."""
    from protein.settings import EvalSettings

    return EvalSettings(
        designs=args.designs, reference=args.reference, out=args.out,
        ss_method=args.ss_method, max_reference=args.max_reference,
        max_diversity=args.max_diversity, reference_limit=args.reference_limit,
        limit=args.limit, seed=args.seed,
    )  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    from protein.eval import format_summary, run_eval

    settings = eval_settings(args)
    summary = run_eval(settings, overwrite=args.overwrite, progress=not args.no_progress,
                       warn=_warn)
    print(format_summary(summary))
    print(f"wrote {settings.out_dir}/designs.csv, summary.json and plots")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from flow3d.engine.config import load_recipe
    from flow3d.io import check_output_dir
    from protein.head import ProteinHead

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.head != "protein":
        raise ConfigError(f"{args.recipe}: head is {recipe.head!r}, not 'protein'")
    head = ProteinHead(recipe)
    # a cache is reused or rebuilt, never mixed: only check that it can be written
    check_output_dir(head.cache_path(), "data.cache_dir", overwrite=True)
    path = head.build_cache(force=args.force)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    print(f"protein cache {path}: {len(meta.get('names', []))} chains")
    return 0


def cmd_plans(args: argparse.Namespace) -> int:
    from flow3d.engine.config import load_recipe
    from flow3d.io import atomic_path, check_output_file
    from protein.head import ProteinHead
    from protein.topology import STRAND, reference_topologies, save_plans

    out = check_output_file(args.out, "--out", overwrite=args.overwrite, suffixes=(".npz",))
    source = Path(args.source)
    if source.suffix in (".yaml", ".yml"):
        if not source.is_file():
            raise ConfigError(f"{source}: recipe not found")
        recipe = load_recipe(source)
        if recipe.head != "protein":
            raise ConfigError(f"{source}: head is {recipe.head!r}, not 'protein'")
        source = ProteinHead(recipe).build_cache()  # the recipe's training chains
    cap = args.max_rg_ratio or None
    if source.suffix == ".npz":
        cap = None  # a library is taken as it was written (its plans carry no coordinates)
    plans = reference_topologies(source, max_rg_ratio=cap)
    with atomic_path(out) as tmp:
        save_plans(plans, tmp)
    strand = sum(int((t.codes == STRAND).sum()) for t in plans) / sum(len(t) for t in plans)
    kept = "" if cap is None else f" with Rg at most {cap:g}x the law"
    print(f"wrote {out}: {len(plans)} fold plans of the chains of {source}{kept} (strand "
          f"fraction {strand:.3f})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``flow3d protein {design,eval,cache,plans}``."""
    p = subparsers.add_parser("protein",
                              help="protein backbones (ReQFlow): design, eval, cache, plans")
    sub = p.add_subparsers(dest="protein_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _add_design(sub)
    _add_eval(sub)
    _add_cache(sub)
    _add_plans(sub)


def _add_design(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "design", help="design backbones with a checkpoint (default: bundled)",
        description="Design protein backbones. Flags left at None take the checkpoint "
                    "recipe's value. Each design is written as soon as its batch is done; "
                    "an interrupted run continues with --resume.", formatter_class=HELP)
    size = d.add_mutually_exclusive_group()
    size.add_argument("--length", type=int_range(), default=None,
                      help="residues per design (None: 100, or the fold plan's length)")
    size.add_argument("--lengths", type=_lengths, default=None,
                      help="several lengths, e.g. 60,100,150")
    d.add_argument("--num", type=int_range(), default=8, help="designs per length")
    d.add_argument("--steps", type=int_range(), default=50, help="solver steps")
    d.add_argument("--seed", type=int_range(), default=0,
                   help="random seed; each batch draws from (seed, length, first index)")
    d.add_argument("--out", required=True,
                   help="output folder: must be empty or new (see --overwrite, --resume)")
    add_overwrite_flag(d, resumable=True)
    d.add_argument("--format", default="pdb", help="file format: pdb or cif")
    d.add_argument("--trajectory", action="store_true",
                   help="also write the path as MODEL records (OUT_trajectories/)")
    d.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (None: the bundled fold-plan model "
                        "tiny_topology; with --no-plan or --motif, tiny_reflow_guided)")
    d.add_argument("--method", default=None, help="solver: euler, midpoint, heun, rk4, dopri5")
    d.add_argument("--rot-rate", type=float_range(), default=None,
                   help="exponential rotation schedule rate (capped at --steps)")
    d.add_argument("--clash-guidance", type=float_range(), default=None, metavar="STRENGTH",
                   help="steer predicted CA positions away from steric clashes while t is in "
                        "the recipe's sample.guidance_window; an inference-time prior, "
                        "strength in [0, 1]; 0 = off (the bundled default samples with 1.0)")
    d.add_argument("--guidance-iters", type=int_range(), default=None, metavar="N",
                   help="gradient steps of clash guidance per network evaluation (the "
                        "recipe's; the bundled default: 30, also with --motif)")
    d.add_argument("--trans-noise", default=None, metavar="{model,length}",
                   help="translation noise sampling starts from: the model's training prior, "
                        "or a cloud whose radius of gyration follows real chains' law at each "
                        "length (the recipe's; the bundled default: length)")
    d.add_argument("--trans-noise-scale", type=float_range(), default=None, metavar="S",
                   help="times that noise's std: larger starts give larger backbones (the "
                        "recipe's; the bundled default: 1.15)")
    d.add_argument("--local-min-dist", type=_distances, default=None, metavar="A2,A3,A4",
                   help="clash guidance also holds CA pairs 2, 3 and 4 residues apart at least "
                        "this far (angstrom; one number for all, 0 = off). Real chains never "
                        "come closer; without it the bundled model's helices fold too tight "
                        "(the recipe's; the bundled default: 5,4.8,5)")
    d.add_argument("--sheet-guidance", type=float_range(), default=None, metavar="STRENGTH",
                   help="with a fold plan: steer the strands it pairs until they form "
                        "H-bonded sheets (DSSP bridges), and its helices into H-bonded "
                        "alpha helices; 1 = the tuned strength, 0 = off (the "
                        "recipe's; the bundled fold-plan model: 1). It takes most of a planned "
                        "design's time: 12-27 s per design of 60-150 residues on 2 cores, "
                        "against 0.5-2.5 s without it")
    d.add_argument("--motif", default=None, metavar="FILE",
                   help="scaffold a motif from this PDB/mmCIF file (with --motif-segments)")
    d.add_argument("--motif-segments", default=None, metavar="SPEC",
                   help="motif residues and their design positions (1-based): "
                        "CHAIN FIRST-LAST@POSITION, comma-separated, e.g. A10-25@30,A40-45@70; "
                        "@20-40 lets each design draw the segment's start in 20..40")
    d.add_argument("--ss", default=None, metavar="PLAN",
                   help="fold conditioning: a secondary-structure plan, one letter per residue "
                        "(H helix, E strand, L loop, ? free), e.g. LLEEEEELLEEEEELL...; sets "
                        "the length")
    d.add_argument("--topology", default=None, metavar="FILE[:CHAIN]",
                   help="fold conditioning: follow this chain's secondary structure and which "
                        "of its helices and strands pack together (sets the length)")
    d.add_argument("--topology-from", default=None, metavar="SOURCE",
                   help="fold conditioning: each design draws the plan of a random chain of "
                        "this reference set (a folder, a cache or a plan library .npz), "
                        "cropped to its length. Without any plan option designs draw from "
                        "the checkpoint's library (plans.npz: the training chains' plans)")
    d.add_argument("--no-plan", action="store_true",
                   help="design without fold plans (the bundled plan-free model "
                        "tiny_reflow_guided unless --checkpoint names another)")
    d.add_argument("--residue", default=None, help="residue names written: GLY or ALA")
    d.add_argument("--batch-size", type=int_range(), default=None,
                   help="designs sampled together (part of the run's seeding)")
    d.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    d.add_argument("--no-ema", action="store_true", help="raw weights instead of EMA")
    d.add_argument("--pair-precision", default=None, choices=("auto", "fp32", "bf16"),
                   help="precision of the residue-pair products (default: the checkpoint's, "
                        "auto = bf16 on CPUs with AMX-BF16, else fp32). bf16 is 2-3x faster "
                        "there; designs move by about 0.05-0.1 A CA RMSD against fp32, which "
                        "is exact (docs/benchmarks.md, protein_speed)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_design)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval", help="evaluate designs (or real chains) and write CSV/JSON/PNG",
        description="Evaluate a folder of designs (or real chains): CA-CA geometry, clashes, "
                    "secondary structure, diversity and, against a reference set, novelty. "
                    "Unreadable files are skipped with a warning.", formatter_class=HELP)
    e.add_argument("designs", help="folder of PDB/mmCIF designs (or a protein cache)")
    e.add_argument("--reference", default=None,
                   help="real structures to compare with: a folder of PDB/mmCIF or a cache")
    e.add_argument("--out", default=None,
                   help="output folder, empty or new (None: DESIGNS/eval, or NAME_eval beside "
                        "a single file)")
    add_overwrite_flag(e)
    e.add_argument("--ss-method", default="pydssp",
                   help="secondary structure: pydssp, mkdssp, pymol (PyMOL's dss) or auto "
                        "(mkdssp when installed)")
    e.add_argument("--max-reference", type=int_range(), default=32,
                   help="references TM-aligned per design for novelty (prefiltered); "
                        "0 = every reference of length 0.5-2x (exact, slow)")
    e.add_argument("--max-diversity", type=int_range(), default=64,
                   help="designs used for pairwise TM diversity (random subset)")
    e.add_argument("--reference-limit", type=int_range(), default=None,
                   help="random subset of the reference set (None: all)")
    e.add_argument("--limit", type=int_range(), default=None,
                   help="random subset of the designs (None: all)")
    e.add_argument("--seed", type=int_range(), default=0, help="seed of the random subsets")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)


def _add_cache(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "cache", help="build the preprocessed training cache once",
        description="Parse, filter and store the recipe's training chains once "
                    "(data.cache_dir/proteins_<hash of sources and filters>); training and "
                    "eval reuse it.", formatter_class=HELP)
    c.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE),
                   help="protein recipe whose data section names the sources and filters")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", default=[],
                   help="recipe overrides, e.g. data.sources=[my_pdbs/] data.max_len=300")
    c.add_argument("--force", action="store_true",
                   help="rebuild even if a cache for these sources and filters exists")
    c.set_defaults(func=cmd_cache)


def _add_plans(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "plans", help="write a fold-plan library (what design draws plans from)",
        description="Store the fold plans (DSSP secondary structure and which helices and "
                    "strands pack) of every chain of a set as a compact .npz library. "
                    "`flow3d protein design` draws a plan per design from its checkpoint's "
                    "plans.npz when it is given none.", formatter_class=HELP)
    c.add_argument("source", help="a protein recipe (its training chains, cached if needed), "
                                  "a protein cache or a folder of PDB/mmCIF files")
    c.add_argument("--out", required=True, help="the library to write (.npz)")
    c.add_argument("--max-rg-ratio", type=float_range(lo=0.0), default=1.1, metavar="R",
                   help="keep the plans of compact chains only: CA radius of gyration at most "
                        "R times the 2.2 L^0.38 A law (0 = every chain). A plan of an open "
                        "chain (a subunit cut from its complex, a coiled coil) asks for an "
                        "open fold")
    add_overwrite_flag(c)
    c.set_defaults(func=cmd_plans)
