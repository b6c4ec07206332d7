"""The ``flow3d`` command: train, sample and evaluate any head; head commands plug in.

    flow3d train recipes/toy/eight_gaussians.yaml trainer.max_steps=200 [--resume]
    flow3d sample runs/toy/eight_gaussians --num 2000 --out samples/ [--steps 2]
    flow3d eval runs/toy/eight_gaussians [--steps 2]
    flow3d protein ... / flow3d mesh ...     (added by each head's own cli.register)

User errors (a missing file, a bad key or value, NaN loss) are one line on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flow3d.errors import ConfigError, Flow3dError
from flow3d.options import OneLineParser

# head name -> "module:register"; register(subparsers) adds that head's sub-commands
HEAD_COMMANDS: dict[str, str] = {
    "protein": "protein.cli:register",
    "mesh": "flow3d.mesh.cli:register",
    "splat": "flow3d.splat.cli:register",
    "view": "flow3d.view:register",  # `flow3d view PATH...`: results in a browser
}


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set steps=10")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return out


def _sample_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = _parse_overrides(args.set or [])
    for key in ("steps", "method", "shift"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return overrides


# ---- commands --------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from flow3d.engine.config import load_recipe
    from flow3d.engine.train import is_rank_zero, train

    recipe = load_recipe(args.recipe, args.overrides)
    ckpt = train(recipe, resume=args.resume)
    if is_rank_zero():
        print(f"checkpoint: {ckpt}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from flow3d.engine.checkpoint import load_model

    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=args.device)
    samples = loaded.sample(args.num, seed=args.seed, **_sample_overrides(args))
    for path in loaded.save_samples(samples, Path(args.out)):
        print(path)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from flow3d.engine.checkpoint import load_model
    from flow3d.io import atomic_write_text

    loaded = load_model(args.checkpoint, ema=not args.no_ema, device=args.device)
    evaluate = getattr(loaded.head, "evaluate", None)
    if evaluate is None:
        raise Flow3dError(
            f"{args.checkpoint}: head {loaded.recipe.head!r} has no generic eval; "
            f"see `flow3d {loaded.recipe.head.split('_')[0]} --help`"
        )
    overrides = _sample_overrides(args)
    num = args.num or loaded.recipe.sample.num
    metrics = evaluate(loaded.sample(num, seed=args.seed, **overrides))
    report = {"checkpoint": str(loaded.path), "step": loaded.step, "num": num,
              "seed": args.seed, "overrides": overrides, "metrics": metrics}
    text = json.dumps(report, indent=1)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


# ---- parser ----------------------------------------------------------------------------------
def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory or run directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="solver steps (overrides the recipe)")
    p.add_argument("--method", help="solver: euler, midpoint, heun, rk4, dopri5")
    p.add_argument("--shift", type=float, help="SD3 time shift of the grid")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other sample-section override (repeatable)")
    p.add_argument("--no-ema", action="store_true", help="use raw weights instead of EMA")
    p.add_argument("--device", default="cpu")


def _register_heads(sub: argparse._SubParsersAction) -> None:
    for name, target in HEAD_COMMANDS.items():
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # the head's own cli module is absent: that head is not installed here
            if e.name is not None and (module_name == e.name or module_name.startswith(
                    e.name + ".")):
                continue
            _unavailable(sub, name, f"{module_name}: {e}")
            continue
        except ImportError as e:  # a broken dependency: say so when the command is used
            _unavailable(sub, name, f"{module_name}: {e}")
            continue
        getattr(module, attr)(sub)


def _unavailable(sub: argparse._SubParsersAction, name: str, why: str) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {why})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args: argparse.Namespace) -> int:
        raise Flow3dError(f"flow3d {name} is unavailable ({why}); "
                          f"install it with pip install 'flow3d[{name}]'")

    p.set_defaults(func=fail)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="flow3d",
        description="Rectified-flow generative modelling for 3D and scientific data.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe (recipes/<head>/<name>.yaml)")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides, e.g. trainer.max_steps=200")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="resume from CKPT, or (no value) from the run's latest checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint and save them")
    _add_sampling_flags(p)
    p.add_argument("--num", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="sample and score against the target (toy: energy "
                                    "distance, MMD)")
    _add_sampling_flags(p)
    p.add_argument("--num", type=int, help="number of samples (default: recipe sample.num)")
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_eval)

    _register_heads(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, before or after the sub-command
    argv = [a for a in argv if a != "--debug"]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own, at import
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except (Flow3dError, FileNotFoundError) as e:
        if debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"flow3d: error: {message}", file=sys.stderr)
        return 2
    except OSError as e:  # a write that failed mid-run (disk full, permissions changed)
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"flow3d: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flow3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
