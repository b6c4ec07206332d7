"""``python -m flow3d.demo --out DIR``: run the main job of every head that has a demo.

Each entry is ``"module:function"`` with ``function(out_dir: Path) -> None``; the demo of head
``h`` writes under ``DIR/h`` and replaces its own files there (fixed names), so ``make demo``
can be run again. A head whose demo module is not present yet is reported as such; a demo that
fails makes the command fail (after the others have run).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

DEMOS: dict[str, str] = {
    "toy": "flow3d.toy.demo:demo",
    "protein": "protein.design:demo",
    "mesh": "flow3d.mesh.pipeline:demo",
    "splat": "flow3d.splat.demo:demo",
    "appearance": "flow3d.appearance.transfer:demo",
    "splatflow": "flow3d.splat.splatflow:demo",
}


def _say(message: str, *, err: bool = False) -> None:
    """This is a command: it reports on stdout (stderr for errors), flushed at once."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def _resolve(target: str) -> tuple[Callable | None, str]:
    """(function, "") or (None, why it is not available)."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            return None, f"{module_name} is not present yet"
        raise  # a real import error inside the head: do not hide it
    fn = getattr(module, attr, None)
    if fn is None:
        return None, f"{module_name} has no {attr}() yet"
    return fn, ""


def run(out: Path, heads: Sequence[str] | None = None) -> int:
    """Run the demos; print what ran, what is absent and what failed; 0 when none failed."""
    names = list(heads) if heads else list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        _say(f"flow3d.demo: error: unknown head(s) {unknown}; choose from {sorted(DEMOS)}",
             err=True)
        return 2
    results: dict[str, str] = {}
    for name in names:
        try:
            fn, why = _resolve(DEMOS[name])
        except Exception as e:  # reported; the command fails
            traceback.print_exc()
            results[name] = f"FAILED to import: {type(e).__name__}: {e}"
            continue
        if fn is None:
            results[name] = f"not present ({why})"
            _say(f"[demo] {name}: skipped, {why}")
            continue
        _say(f"[demo] {name}: running {DEMOS[name]} -> {out / name}")
        start = time.perf_counter()
        try:
            fn(out / name)
        except Exception as e:  # reported; the command fails
            traceback.print_exc()
            results[name] = f"FAILED: {type(e).__name__}: {e}"
        else:
            results[name] = f"ran in {time.perf_counter() - start:.1f} s"
        _say(f"[demo] {name}: {results[name]}")
    _say("\n[demo] summary")
    width = max(map(len, results), default=8)
    for name, result in results.items():
        _say(f"  {name:{width}s} {result}")
    return 1 if any("FAILED" in r for r in results.values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flow3d.demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output directory")
    parser.add_argument("--heads", nargs="*", help=f"subset of {sorted(DEMOS)}")
    args = parser.parse_args(argv)
    return run(Path(args.out), args.heads)


if __name__ == "__main__":
    sys.exit(main())
