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
import dataclasses
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from flow3d.engine.checkpoint import load_model, read_train_state
from flow3d.engine.config import load_recipe
from flow3d.engine.keys import check_method
from flow3d.engine.train import is_rank_zero, resume_checkpoint, train
from flow3d.errors import ConfigError, Flow3dError
from flow3d.io import atomic_dir, atomic_write_text, check_output_dir, check_output_file
from flow3d.options import OneLineParser, add_overwrite_flag, check_float, check_int

# head name -> "module:register"; register(subparsers) adds that head's sub-commands
HEAD_COMMANDS: dict[str, str] = {
    "protein": "protein.cli:register",
    "mesh": "flow3d.mesh.cli:register",
    "splat": "flow3d.splat.cli:register",
    "appearance": "flow3d.appearance.cli:register",
    "view": "flow3d.view:register",  # `flow3d view PATH...`: results in a browser
}



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every ``--help`` shows each option's default, except defaults that say nothing (None,
    False) and help texts that already name theirs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        silent = action.default is None or action.default is False
        if silent or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)



# ---- settings ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """What ``flow3d sample`` and ``flow3d eval`` draw: built once from the command line,
    checked once here (messages name the option), passed down."""

    checkpoint: str
    num: int | None = None  # None: the recipe's sample.num (eval)
    seed: int = 0
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # sample section
    ema: bool = True
    device: str = "cpu"

    def __post_init__(self):
        if not str(self.checkpoint).strip():
            raise ConfigError("checkpoint: a checkpoint folder is required (got '')")
        if self.num is not None:
            check_int(self.num, "--num", lo=1, hi=10**7)
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 1)
        if "steps" in self.overrides:
            check_int(self.overrides["steps"], "--steps", lo=1, hi=10**5)
        if "method" in self.overrides:
            check_method(self.overrides["method"], "--method")
        if self.overrides.get("shift") is not None:
            check_float(self.overrides["shift"], "--shift", lo=0.0, hi=1e3, lo_open=True)
        check_device(self.device)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SampleSettings:
        overrides = parse_sets(args.set or [])
        for key in ("steps", "method", "shift"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        return cls(args.checkpoint, args.num, args.seed, overrides, not args.no_ema, args.device)

    def load(self):
        return load_model(self.checkpoint, ema=self.ema, device=self.device)


def check_device(device: str) -> str:
    """A torch device this machine has, else a ConfigError naming ``--device``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r}: not a device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: only cpu and cuda are supported")
    return device


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` items (values parsed as YAML) as a mapping."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set steps=10")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


# ---- commands --------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    if args.resume not in (None, "auto") and "=" in args.resume and not Path(args.resume).exists():
        # `--resume trainer.max_steps=300`: an override, not a checkpoint to resume from
        args.overrides, args.resume = [*args.overrides, args.resume], "auto"
    recipe = load_recipe(args.recipe, args.overrides)
    if args.resume is not None and is_rank_zero():
        start = resume_checkpoint(recipe, args.resume)
        if start is None:
            print(f"--resume: no checkpoint under {recipe.trainer.out_dir} yet; starting at "
                  "step 0")
        else:
            step = int(read_train_state(start)[0].get("step", 0))
            print(f"resuming from {start} at step {step} of {recipe.trainer.max_steps}")
    ckpt = train(recipe, resume=args.resume, overwrite=args.overwrite)
    if is_rank_zero():
        print(f"checkpoint: {ckpt}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    settings = SampleSettings.from_args(args)
    out = check_output_dir(args.out, "--out", overwrite=args.overwrite)
    loaded = settings.load()
    samples = loaded.sample(settings.num, seed=settings.seed, **settings.overrides)
    # the whole folder at once: a killed run leaves a temporary, never half the samples
    with atomic_dir(out) as tmp:
        written = loaded.save_samples(samples, tmp)
    for path in written:
        print(out / Path(path).relative_to(tmp))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    settings = SampleSettings.from_args(args)
    if args.json is not None:
        check_output_file(args.json, "--json", overwrite=args.overwrite, suffixes=(".json",))
    loaded = settings.load()
    evaluate = getattr(loaded.head, "evaluate", None)
    if evaluate is None:
        raise Flow3dError(
            f"{args.checkpoint}: head {loaded.recipe.head!r} has no generic eval; "
            f"see `flow3d {loaded.recipe.head.split('_')[0]} --help`"
        )
    num = settings.num or loaded.recipe.sample.num
    metrics = evaluate(loaded.sample(num, seed=settings.seed, **settings.overrides))
    report = {"checkpoint": str(loaded.path), "step": loaded.step, "num": num,
              "seed": settings.seed, "overrides": settings.overrides, "metrics": metrics}
    text = json.dumps(report, indent=1)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


# ---- parser ----------------------------------------------------------------------------------
def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory or run directory")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--steps", type=int, help="solver steps (default: the recipe's)")
    p.add_argument("--method", help="solver: euler, midpoint, heun, rk4, dopri5 "
                                    "(default: the recipe's)")
    p.add_argument("--shift", type=float, help="SD3 time shift of the grid "
                                               "(default: the recipe's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other sample-section override (repeatable)")
    p.add_argument("--no-ema", action="store_true", help="use raw weights instead of EMA")
    p.add_argument("--device", default="cpu", help="torch device")


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
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe (recipes/<head>/<name>.yaml)",
                       formatter_class=HelpFormatter)
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides, e.g. trainer.max_steps=200")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="resume from CKPT, or (no value) from the run's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="empty a trainer.out_dir that holds an earlier run, then start afresh")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a checkpoint and save them",
                       formatter_class=HelpFormatter)
    _add_sampling_flags(p)
    p.add_argument("--num", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output folder (written all at once)")
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="sample and score against the target (toy: energy "
                                    "distance, MMD)", formatter_class=HelpFormatter)
    _add_sampling_flags(p)
    p.add_argument("--num", type=int, help="number of samples (default: recipe sample.num)")
    p.add_argument("--json", help="also write the report to this file")
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_eval)

    _register_heads(sub)
    return parser


# Options whose value is a comma-separated list of numbers that may start with a minus sign
# (argparse would take "-1,0,0,1,1,1" for an option): "--box -1,..." becomes "--box=-1,...".
NUMBER_LIST_OPTIONS = ("--box",)


def _join_negative_lists(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in NUMBER_LIST_OPTIONS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and \
                argv[i + 1][1:2] in tuple("0123456789."):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, before or after the sub-command
    argv = _join_negative_lists([a for a in argv if a != "--debug"])
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own, at import
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras and getattr(args, "func", None) is cmd_train and all(
                "=" in e and not e.startswith("-") for e in extras):
            args.overrides = [*args.overrides, *extras]  # overrides after --overwrite
        elif extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
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
